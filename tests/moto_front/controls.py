"""Test controls of the moto front, not AWS APIs: a delay on the next requests for an
operation (before moto serves it, or after: the answer held back), a wait for the delayed
request to arrive, and a table status other than moto's constant ACTIVE, for testing crashes,
races and deadlines."""

from __future__ import annotations

import io
import threading
import time
from urllib.parse import unquote


# Operation name -> the slow-downs waiting for it: {"resource", "ms", "answer"}; with "answer",
# moto serves the request at once and the answer is held back (the call has taken effect when a
# client that gives up, or dies, would think it had not).
DELAYS: dict[str, list[dict]] = {}
DELAYS_LOCK = threading.Lock()
# Every delay asked for, with an event set once a request has taken it: a test waits for the
# request it slowed to arrive (`held`) rather than guess how long that takes.
ASKED: list[dict] = []
# Table name -> the TableStatus DescribeTable shows instead of moto's constant ACTIVE.
TABLE_STATUS: dict[str, str] = {}


def take_delay(action: str, request_text: str, answer: bool):
    """The slow-down waiting for this request of the operation (one that names its resource), if
    any; each slows one request."""
    with DELAYS_LOCK:
        rules = DELAYS.get(action, [])
        rule = next((r for r in rules if r["resource"] in request_text and r["answer"] == answer), None)
        if rule is not None:
            rules.remove(rule)
            if not answer:
                rule["taken"].set()
    return rule


def add_delay(action: str, resource: str, ms: int, answer: bool):
    rule = {"action": action, "resource": resource, "ms": ms, "answer": answer,
            "taken": threading.Event()}
    with DELAYS_LOCK:
        DELAYS.setdefault(action, []).append(rule)
        ASKED.append(rule)


def held(action: str, resource: str, timeout: float) -> bool:
    """Waits until a request has taken the delay asked for `action` on `resource` (the oldest
    such delay): the slowed request has arrived and is being held (for an `answer` delay: moto
    has served it, and its answer is being held)."""
    with DELAYS_LOCK:
        rule = next((r for r in ASKED if r["action"] == action and r["resource"] == resource), None)
    if rule is None:
        return False
    taken = rule["taken"].wait(timeout)
    if taken:
        with DELAYS_LOCK:
            if rule in ASKED:
                ASKED.remove(rule)
    return taken


class DelayedAnswers:
    """WSGI middleware: holds back moto's answer to a JSON-protocol request (X-Amz-Target) that a
    `"answer": true` delay names, after moto has served it."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not DELAYS or not target:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        rule = take_delay(target.rsplit(".", 1)[-1], body.decode(errors="replace"), answer=True)
        chunks = self.app(environ, start_response)
        if rule is not None:
            answer = b"".join(chunks)
            # Held from here: the call has taken effect, and only its answer waits.
            rule["taken"].set()
            time.sleep(rule["ms"] / 1000)
            return [answer]
        return chunks


def patch_controls():
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.dynamodb.models.table import Table

    authorize = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def slowed_then_authorized(self, iam_request_cls, resource="*"):
        if DELAYS:
            body = self.body.decode(errors="replace") if isinstance(self.body, bytes) else str(self.body or "")
            rule = take_delay(self._get_action(), f"{unquote(self.path)} {body}", answer=False)
            if rule is not None:
                time.sleep(rule["ms"] / 1000)
        return authorize(self, iam_request_cls, resource)

    describe = Table.describe

    def describe_with_status(self, *args, **kwargs):
        answer = describe(self, *args, **kwargs)
        status = TABLE_STATUS.get(self.name)
        if status:
            for body in answer.values():
                body["TableStatus"] = status
        return answer

    ActionAuthenticatorMixin._authenticate_and_authorize_action = slowed_then_authorized
    Table.describe = describe_with_status
