"""A small front for moto's server, used by the tests and the demo.

It runs moto's own WSGI application in this process and adds what the Rust SDK needs and moto
lacks (each addition is documented in tests/moto_front/README.md):

* SQS: the DeadLetterQueueSourceArn message system attribute, which SQS sets when it moves a
  message to a dead-letter queue after maxReceiveCount receives and moto does not; deletes made
  atomic (moto rebuilds a queue's message list without its lock, so two concurrent
  DeleteMessageBatch calls can bring a deleted message back, or drop one being added); and
  speed: a retention check that does not compute every queue attribute for every message
  received, and visible-message scans and counts that read the clock once instead of once or twice per
  message (without them, a 10,000-message queue takes hours).
* Smithy RPC v2 CBOR -> AWS JSON 1.0 bridge. aws-sdk-cloudwatch speaks CBOR
  (POST /service/GraniteServiceVersion20100801/operation/<Op>); moto answers that with 404 but serves
  the JSON protocol (X-Amz-Target). Requests are decoded and forwarded as JSON; responses and errors
  are re-encoded as CBOR, typed by botocore's service model (timestamps as CBOR tag 1, blobs as
  bytes, doubles as floats), which is what the SDK's CBOR deserialiser requires.

Usage: front.py [--port N]   (0, the default, picks a free loopback port)
Prints one line `READY <port>` on stdout once it accepts connections, and exits when its stdin
closes, so a test process that dies cannot leave an emulator behind.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import re
import sys
import threading

import botocore.session
import cbor2
from moto.core.utils import unix_time, unix_time_millis
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.sqs import exceptions as sqs_exceptions
from moto.sqs import models as sqs_models
from moto.sqs import responses as sqs_responses
from werkzeug.serving import make_server

# Smithy service id (as it appears in the CBOR path) -> botocore service name.
CBOR_SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}
CBOR_PATH = re.compile(r"^/service/(?P<service>[^/]+)/operation/(?P<operation>[^/]+)$")

_models: dict[str, object] = {}


def service_model(name: str):
    if name not in _models:
        _models[name] = botocore.session.get_session().get_service_model(name)
    return _models[name]


def cbor_to_json(value):
    """CBOR request values -> JSON 1.0 values (timestamps as epoch seconds, blobs as base64)."""
    if isinstance(value, dict):
        return {k: cbor_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [cbor_to_json(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, cbor2.CBORTag):
        raise ValueError(f"unsupported CBOR tag {value.tag}")
    return value


def json_to_cbor(value, shape):
    """JSON 1.0 response values -> CBOR values typed by the botocore output shape."""
    if value is None or shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for key, item in value.items():
            member = shape.members.get(key)
            if member is not None:
                out[key] = json_to_cbor(item, member)
        return out
    if kind == "list":
        return [json_to_cbor(v, shape.member) for v in value]
    if kind == "map":
        return {k: json_to_cbor(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        if isinstance(value, str):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    if kind == "blob":
        return base64.b64decode(value)
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long"):
        return int(value)
    return value


# --- SQS ------------------------------------------------------------------------------------

# Message id -> ARN of the queue it was moved from into its dead-letter queue.
DLQ_SOURCES: dict[str, str] = {}
_moving = threading.local()


def patch_sqs():
    backend_cls = sqs_models.SQSBackend
    queue_cls = sqs_models.Queue
    receive = backend_cls.receive_message
    add_message = queue_cls.add_message
    respond = sqs_responses.SQSResponse.receive_message

    def receive_message(self, queue_name, *args, **kwargs):
        # The only add_message calls during a receive are moves to the dead-letter queue.
        _moving.source = self.get_queue(queue_name)
        try:
            return receive(self, queue_name, *args, **kwargs)
        finally:
            _moving.source = None

    def add_message_recording_source(self, message):
        source = getattr(_moving, "source", None)
        if source is not None and source.dead_letter_queue is self:
            DLQ_SOURCES[message.id] = source.queue_arn
        return add_message(self, message)

    def receive_message_response(self):
        result = respond(self)
        wanted = set(self._get_param("MessageSystemAttributeNames", []) or []) | set(
            self._get_param("AttributeNames", []) or [])
        if wanted & {"All", "DeadLetterQueueSourceArn"}:
            for message in result.result.get("Messages", []):
                source = DLQ_SOURCES.get(message["MessageId"])
                if source:
                    message.setdefault("Attributes", {})["DeadLetterQueueSourceArn"] = source
        return result

    def delete_message_atomically(self, receipt_handle):
        # moto's own delete, in one pass and under the queue's lock.
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return
            for index, message in enumerate(self._messages):
                if message.receipt_handle == receipt_handle or receipt_handle in message._old_receipt_handles:
                    self.pending_messages.discard(message)
                    self.deleted_messages.update(message.all_receipt_handles)
                    del self._messages[index]
                    return
            raise sqs_exceptions.ReceiptHandleIsInvalid()

    def visible_messages(self):
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and now >= m.delayed_until]

    def count_delayed(self):
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def count_not_visible(self):
        now = unix_time_millis()
        return sum(1 for m in self._messages if now <= m.visible_at)

    def retention_check(self, queue_name, message):
        queue = self.get_queue(queue_name)
        retention = int(getattr(queue, "message_retention_period", 345600))
        return retention + message.sent_timestamp / 1000 > unix_time()

    backend_cls.receive_message = receive_message
    queue_cls.add_message = add_message_recording_source
    sqs_responses.SQSResponse.receive_message = receive_message_response
    backend_cls.is_message_valid_based_on_retention_period = retention_check
    queue_cls.delete_message = delete_message_atomically
    queue_cls.messages = property(visible_messages)
    queue_cls.approximate_number_of_messages_delayed = property(count_delayed)
    queue_cls.approximate_number_of_messages_not_visible = property(count_not_visible)


# --- CloudWatch over CBOR ---------------------------------------------------------------------

class CborBridge:
    """WSGI middleware: Smithy RPC v2 CBOR in front of moto's JSON protocol handlers."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        match = CBOR_PATH.match(environ.get("PATH_INFO", ""))
        if not match or match["service"] not in CBOR_SERVICES:
            return self.app(environ, start_response)
        service, operation = match["service"], match["operation"]
        model = service_model(CBOR_SERVICES[service])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            params = cbor_to_json(cbor2.loads(raw)) if raw else {}
        except Exception as err:  # malformed CBOR is the client's error, as in AWS
            return self._reply(start_response, "400 Bad Request", {
                "__type": f"{service}#SerializationException",
                "message": f"request body is not valid CBOR: {err}",
            })
        body = json.dumps(params).encode()
        inner = dict(environ)
        inner.update({
            "PATH_INFO": "/",
            "REQUEST_URI": "/",
            "RAW_URI": "/",
            "CONTENT_TYPE": "application/x-amz-json-1.0",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_X_AMZ_TARGET": f"{service}.{operation}",
            "wsgi.input": io.BytesIO(body),
        })
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"] = status
            return lambda _data: None

        chunks = self.app(inner, capture)
        try:
            answer = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        status = captured.get("status", "500 Internal Server Error")
        try:
            decoded = json.loads(answer) if answer.strip() else {}
        except ValueError:
            decoded = {"__type": f"{service}#InternalFailure", "message": answer.decode(errors="replace")}
            status = "500 Internal Server Error"
        if status.startswith("2"):
            op_model = model.operation_model(operation)
            decoded = json_to_cbor(decoded, op_model.output_shape) if op_model.output_shape else {}
        else:
            decoded = {
                "__type": decoded.get("__type", "InternalFailure"),
                "message": decoded.get("message") or decoded.get("Message") or "",
            }
        return self._reply(start_response, status, decoded)

    @staticmethod
    def _reply(start_response, status, payload):
        data = cbor2.dumps(payload, datetime_as_timestamp=True)
        start_response(status, [
            ("Content-Type", "application/cbor"),
            ("smithy-protocol", "rpc-v2-cbor"),
            ("Content-Length", str(len(data))),
        ])
        return [data]


def build_app():
    patch_sqs()
    return CborBridge(DomainDispatcherApplication(create_backend_app))


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, build_app(), threaded=True,
                         request_handler=MotoRequestHandler)
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
