"""The moto front's fault mode: a share of the calls the functions under test make answered
with a fault AWS really returns (throttling, 500, 503, a connection reset) instead of being
served."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading

import iam


# What AWS answers a throttled call with, per signing service: (HTTP status, error code).
THROTTLES = {
    "dynamodb": (400, "ProvisionedThroughputExceededException"),
    "sqs": (400, "RequestThrottled"),
    "lambda": (429, "TooManyRequestsException"),
    "monitoring": (400, "Throttling"),
    "cloudformation": (400, "Throttling"),
    "events": (400, "ThrottlingException"),
}


class Faults:
    """FRONT_FAULTS="rate=0.1,seed=7[,services=dynamodb+sqs]": answers that share of the calls
    signed by IAM users (the functions under test; the tests' own fixture keys are spared) with
    a fault AWS really returns, chosen at random: throttling in the service's own code, 500, 503,
    or a connection reset. Nothing reaches moto when a fault is answered. GET /_front/faults
    counts them by access key and kind."""

    def __init__(self, spec: str):
        fields = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        self.rate = float(fields.get("rate", "0"))
        self.services = set(fields["services"].split("+")) if "services" in fields else None
        self.random = random.Random(int(fields.get("seed", "0")))
        self.lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}

    def pick(self, service: str, key: str):
        if self.services is not None and service not in self.services:
            return None
        with self.lock:
            if self.random.random() >= self.rate:
                return None
            kind = self.random.choice(["throttle", "500", "503", "reset"])
            per_key = self.counts.setdefault(key, {})
            per_key[kind] = per_key.get(kind, 0) + 1
        return kind


FAULTS = Faults(os.environ["FRONT_FAULTS"]) if os.environ.get("FRONT_FAULTS") else None


class FaultInjection:
    """WSGI middleware (inside the CBOR bridge, so CloudWatch's faults are re-encoded as CBOR)
    answering the calls FAULTS picks in the protocol of the service that was called."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        found = iam.ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
        if FAULTS is None or not found or iam.iam_user_of(found["key"]) is None:
            return self.app(environ, start_response)
        service = found["service"]
        kind = FAULTS.pick(service, found["key"])
        if kind is None:
            return self.app(environ, start_response)
        if kind == "reset":
            connection = environ.get("werkzeug.socket")
            if connection is not None:
                # An abortive close: the client sees ECONNRESET, as when a load balancer drops it.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                connection.close()
                return []
            kind = "500"
        status, code = {
            "throttle": THROTTLES.get(service, (400, "ThrottlingException")),
            "500": (500, "InternalFailure"),
            "503": (503, "ServiceUnavailable"),
        }[kind]
        message = f"injected by the moto front's fault mode ({kind})"
        reasons = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
                   503: "Service Unavailable"}
        headers = [("x-amzn-RequestId", "fault-injected"), ("x-amzn-ErrorType", code)]
        if environ.get("HTTP_X_AMZ_TARGET") or service == "lambda":
            body = json.dumps({"__type": code, "message": message, "Message": message}).encode()
            headers.append(("Content-Type", "application/x-amz-json-1.0"))
        else:
            body = (f"<ErrorResponse><Error><Type>{'Sender' if status < 500 else 'Receiver'}</Type>"
                    f"<Code>{code}</Code><Message>{message}</Message></Error>"
                    "<RequestId>fault-injected</RequestId></ErrorResponse>").encode()
            headers.append(("Content-Type", "text/xml"))
        headers.append(("Content-Length", str(len(body))))
        start_response(f"{status} {reasons[status]}", headers)
        return [body]
