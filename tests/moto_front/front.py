"""A small front for moto's server, used by the tests and the demo.

It runs moto's own WSGI application in this process and adds what the Rust SDK needs and moto
lacks (each addition is documented in tests/moto_front/README.md):

* SQS: a message's size counted as SQS counts it (body and attributes) against the queue's
  MaximumMessageSize; the DeadLetterQueueSourceArn message system attribute, which SQS sets when it moves a
  message to a dead-letter queue after maxReceiveCount receives and moto does not; deletes made
  atomic (moto rebuilds a queue's message list without its lock, so two concurrent
  DeleteMessageBatch calls can bring a deleted message back, or drop one being added); and
  speed: a retention check that does not compute every queue attribute for every message
  received, and visible-message scans and counts that read the clock once instead of once or twice per
  message (without them, a 10,000-message queue takes hours).
* CloudFormation: ContinueUpdateRollback, CancelUpdateStack and RollbackStack on moto's own
  stacks (moto has none of them), DescribeStackResources by PhysicalResourceId (moto needs a
  stack name), and a control endpoint that puts a stack in a given status with a failure event
  (POST /_front/cloudformation/stack-status {"stack", "status", "resource", "reason", "minutes_ago"}), since
  nothing in moto leaves a stack in UPDATE_ROLLBACK_FAILED. The control endpoint is not an AWS API.
  Stacks also create AWS::CloudWatch::Alarm and AWS::Lambda::EventInvokeConfig resources (moto
  skips both), through moto's own PutMetricAlarm and PutFunctionEventInvokeConfig.
* EventBridge: PutEvents skips rules' Lambda targets and publishes to SNS targets (moto raises
  on both), and schedule rules no longer match every event.
* Test controls (not AWS APIs): a delay on the next requests for an operation, and a table
  status other than moto's constant ACTIVE, for testing crashes, races and deadlines.
* A fault mode (FRONT_FAULTS="rate=0.1,seed=7"): a share of the calls the functions under test
  make are answered with throttling, 500, 503 or a connection reset instead of being served.
* Lambda GetAccountSettings, which moto lacks: the account's concurrency limit
  (MOTO_LAMBDA_CONCURRENCY_QUOTA, as moto's PutFunctionConcurrency uses it; 1000 by default) and
  what the functions' reservations leave unreserved.
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
import logging
import math
import os
import re
import sys
import threading
import time
import traceback

import botocore.session
import cbor2
from moto.core.utils import unix_time, unix_time_millis
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.cloudformation import models as cfn_models
from moto.cloudformation import responses as cfn_responses
from moto.cloudformation.exceptions import ValidationError as CfnValidationError
from moto.core.common_models import CloudFormationModel
from moto.core.responses import ActionResult
from moto.events import models as events_models
from moto.sqs import exceptions as sqs_exceptions
from moto.sqs import models as sqs_models
from moto.sqs import responses as sqs_responses
from werkzeug.serving import make_server

import controls
import faults
import iam

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
    # An event source mapping from a queue is listed, but moto does not invoke its function on
    # each message (it would need Docker): the tests run the functions as processes.
    sqs_models.Queue.lambda_event_source_mappings = property(lambda self: {}, lambda self, value: None)
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

    # moto iterates these while other requests change them (a receive or a redrive running at
    # the same time): "changed size during iteration" answered 500. A copy is taken at once.
    def pending_message_groups(self):
        return {message.group_id for message in list(self._pending_messages)
                if message.group_id is not None}

    def list_dead_letter_source_queues(self, queue_name):
        dlq = self.get_queue(queue_name)
        return [queue for queue in list(self.queues.values()) if queue.dead_letter_queue is dlq]

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

    send = backend_cls.send_message

    def send_message_within_size(self, queue_name, message_body, message_attributes=None, *args, **kwargs):
        # SQS counts the body and every attribute's name, type and value against the queue's
        # MaximumMessageSize; moto counts the body alone.
        queue = self.get_queue(queue_name)
        size = len(message_body.encode())
        for name, value in (message_attributes or {}).items():
            data = value.get("StringValue") or value.get("string_value") or value.get("BinaryValue") \
                or value.get("binary_value") or ""
            size += len(name) + len(value.get("DataType") or value.get("data_type") or "") + len(data)
        if size > int(queue.maximum_message_size):
            raise sqs_exceptions.InvalidParameterValue(
                f"One or more parameters are invalid. Reason: Message must be shorter than {queue.maximum_message_size} bytes.")
        return send(self, queue_name, message_body, message_attributes, *args, **kwargs)

    backend_cls.send_message = send_message_within_size
    backend_cls.receive_message = receive_message
    queue_cls.add_message = add_message_recording_source
    sqs_responses.SQSResponse.receive_message = receive_message_response
    backend_cls.is_message_valid_based_on_retention_period = retention_check
    queue_cls.delete_message = delete_message_atomically
    queue_cls.messages = property(visible_messages)
    queue_cls.approximate_number_of_messages_delayed = property(count_delayed)
    queue_cls.approximate_number_of_messages_not_visible = property(count_not_visible)
    queue_cls.pending_message_groups = property(pending_message_groups)
    backend_cls.list_dead_letter_source_queues = list_dead_letter_source_queues


# --- CloudFormation ---------------------------------------------------------------------------

def stack_event(stack, logical_id, status, reason=None, resource_type="AWS::CloudFormation::Stack"):
    stack.events.append(cfn_models.Event(
        stack_id=stack.stack_id,
        stack_name=stack.name,
        logical_resource_id=logical_id,
        physical_resource_id=stack.stack_id if logical_id == stack.name else logical_id,
        resource_type=resource_type,
        resource_status=status,
        resource_status_reason=reason,
        resource_properties=None,
    ))


def set_stack_status(stack_name, status, resource=None, reason=None, minutes_ago=0):
    """Puts every region's and account's stack of that name in `status` (the control endpoint),
    entered `minutes_ago` (moto's stacks show their creation time as the time of their status)."""
    found = False
    for account in cfn_models.cloudformation_backends.values():
        for backend in account.values():
            for stack in list(backend.stacks.values()):
                if stack.name != stack_name:
                    continue
                found = True
                if resource:
                    failed = "UPDATE_FAILED" if "UPDATE" in status else "CREATE_FAILED"
                    stack_event(stack, resource, failed, reason or "Resource update failed", "AWS::CloudFormation::CustomResource")
                stack.status = status
                stack_event(stack, stack.name, status, reason)
                if minutes_ago:
                    stack.creation_time = stack.creation_time - dt.timedelta(minutes=minutes_ago)
    return found


def patch_cloudformation():
    backend_cls = cfn_models.CloudFormationBackend
    response_cls = cfn_responses.CloudFormationResponse
    describe_resources = backend_cls.describe_stack_resources

    def continue_update_rollback(self, stack_name, resources_to_skip):
        stack = self.get_stack(stack_name)
        if stack.status != "UPDATE_ROLLBACK_FAILED":
            raise CfnValidationError(message=(
                f"Stack:{stack.stack_id} is in {stack.status} state and can not continue update rollback"))
        stack_event(stack, stack.name, "UPDATE_ROLLBACK_IN_PROGRESS", "Continue update rollback requested by user")
        for resource in resources_to_skip:
            stack_event(stack, resource, "UPDATE_COMPLETE", "Resource skipped during UpdateRollback", "")
        stack.status = "UPDATE_ROLLBACK_COMPLETE"
        stack_event(stack, stack.name, "UPDATE_ROLLBACK_COMPLETE")

    def cancel_update_stack(self, stack_name):
        stack = self.get_stack(stack_name)
        if stack.status != "UPDATE_IN_PROGRESS":
            raise CfnValidationError(message=f"CancelUpdateStack cannot be called from current stack status {stack.status}")
        stack_event(stack, stack.name, "UPDATE_ROLLBACK_IN_PROGRESS", "User Initiated")
        stack.status = "UPDATE_ROLLBACK_COMPLETE"
        stack_event(stack, stack.name, "UPDATE_ROLLBACK_COMPLETE")

    def rollback_stack(self, stack_name):
        stack = self.get_stack(stack_name)
        rolled_back = {"UPDATE_FAILED": "UPDATE_ROLLBACK_COMPLETE", "CREATE_FAILED": "ROLLBACK_COMPLETE"}.get(stack.status)
        if rolled_back is None:
            raise CfnValidationError(message=f"Stack {stack.stack_id} is in {stack.status} state and can not be rolled back")
        stack_event(stack, stack.name, rolled_back.replace("COMPLETE", "IN_PROGRESS"), "Rollback requested by user")
        stack.status = rolled_back
        stack_event(stack, stack.name, rolled_back)
        return stack.stack_id

    def describe_stack_resources(self, stack_name, logical_resource_id):
        if stack_name is None:
            physical = getattr(_physical, "id", None)
            # Another request may be creating a stack's resources meanwhile: read again then.
            for _ in range(5):
                try:
                    for stack in list(self.stacks.values()):
                        for resource in list(stack.stack_resources):
                            if getattr(resource, "physical_resource_id", None) == physical:
                                return stack, [resource]
                    break
                except RuntimeError:
                    continue
            raise CfnValidationError(message=f"Stack for {physical} does not exist")
        return describe_resources(self, stack_name, logical_resource_id)

    def continue_update_rollback_response(self):
        self.cloudformation_backend.continue_update_rollback(
            self._get_param("StackName"), self._get_param("ResourcesToSkip", []) or [])
        return ActionResult({})

    def cancel_update_stack_response(self):
        self.cloudformation_backend.cancel_update_stack(self._get_param("StackName"))
        return ActionResult({})

    def rollback_stack_response(self):
        return ActionResult({"StackId": self.cloudformation_backend.rollback_stack(self._get_param("StackName"))})

    describe_resources_response = response_cls.describe_stack_resources

    def describe_stack_resources_response(self):
        _physical.id = self._get_param("PhysicalResourceId")
        try:
            return describe_resources_response(self)
        finally:
            _physical.id = None

    backend_cls.continue_update_rollback = continue_update_rollback
    backend_cls.cancel_update_stack = cancel_update_stack
    backend_cls.rollback_stack = rollback_stack
    backend_cls.describe_stack_resources = describe_stack_resources
    response_cls.continue_update_rollback = continue_update_rollback_response
    response_cls.cancel_update_stack = cancel_update_stack_response
    response_cls.rollback_stack = rollback_stack_response
    response_cls.describe_stack_resources = describe_stack_resources_response


_physical = threading.local()


def patch_cloudwatch_percentiles():
    """GetMetricData answers a percentile statistic (`p99`, `p99.9`) as CloudWatch does; moto
    answers None for any statistic but the five basic ones. Nearest rank over the period's raw
    values (CloudWatch needs raw values for percentiles too: a StatisticSet has none)."""
    from moto.cloudwatch.models import MetricDatum, Statistics

    basic = Statistics.get_statistics_for_type

    def get_statistics_for_type(self, stat):
        found = PERCENTILE.fullmatch(stat or "")
        if not found:
            return basic(self, stat)
        values = sorted(m.value for m in self.metric_data or [] if isinstance(m, MetricDatum))
        if not values:
            return None
        rank = max(1, math.ceil(float(found[1]) / 100 * len(values)))
        return values[min(rank, len(values)) - 1]

    Statistics.get_statistics_for_type = get_statistics_for_type


PERCENTILE = re.compile(r"p(\d{1,3}(?:\.\d+)?)")


def patch_logs_filter_patterns():
    """FilterLogEvents with a pattern of optional terms (`?ERROR ?"Task timed out"`) matches an
    event holding any of them, as CloudWatch Logs does; moto treats such a pattern as matching
    everything."""
    from moto.logs import utils as logs_utils

    matches = logs_utils.EventMessageFilter.matches

    def any_term(self, message):
        terms = OPTIONAL_TERM.findall(self.pattern or "")
        if not terms:
            return matches(self, message)
        return any((quoted or bare) in message for quoted, bare in terms)

    init = logs_utils.EventMessageFilter.__init__

    def remember(self, pattern):
        init(self, pattern)
        self.pattern = pattern

    logs_utils.EventMessageFilter.__init__ = remember
    logs_utils.EventMessageFilter.matches = any_term


OPTIONAL_TERM = re.compile(r'\?(?:"([^"]*)"|(\S+))')


def patch_application_autoscaling():
    """RegisterScalableTarget moves a DynamoDB table's or index's provisioned capacity into the new
    range, as AWS documents ("it changes the resource's current capacity to a value that is inside
    of this range"); moto records the range and leaves the table as it was."""
    from moto.applicationautoscaling.models import ApplicationAutoscalingBackend
    from moto.dynamodb.models import dynamodb_backends

    register = ApplicationAutoscalingBackend.register_scalable_target

    def register_scalable_target(self, namespace, r_id, dimension, min_capacity, max_capacity, *args, **kwargs):
        target = register(self, namespace, r_id, dimension, min_capacity, max_capacity, *args, **kwargs)
        if namespace == "dynamodb":
            parts = r_id.split("/")  # table/<name> or table/<name>/index/<index>
            try:
                table = dynamodb_backends[self.account_id][self.region_name].get_table(parts[1])
            except Exception:
                return target
            holder = table
            if len(parts) == 4:
                holder = next((gsi for gsi in table.global_indexes if gsi.name == parts[3]), None)
            key = "ReadCapacityUnits" if dimension.endswith("ReadCapacityUnits") else "WriteCapacityUnits"
            throughput = getattr(holder, "throughput", None)
            if throughput and throughput.get(key):
                throughput[key] = min(max(throughput[key], target.min_capacity), target.max_capacity)
        return target

    ApplicationAutoscalingBackend.register_scalable_target = register_scalable_target


class CloudWatchAlarmResource(CloudFormationModel):
    """AWS::CloudWatch::Alarm in moto's stacks (moto's CloudFormation skips it): a metric alarm
    made through moto's own PutMetricAlarm."""

    # moto's model registry files each model under the service named by its module's path.
    __module__ = "moto.cloudwatch.front"

    def __init__(self, name):
        self.physical_resource_id = name

    @staticmethod
    def cloudformation_type():
        return "AWS::CloudWatch::Alarm"

    @staticmethod
    def cloudformation_name_type():
        return "AlarmName"

    @classmethod
    def has_cfn_attr(cls, attr):
        return False

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.cloudwatch.models import cloudwatch_backends

        props = cloudformation_json["Properties"]
        name = props.get("AlarmName") or resource_name
        cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name, namespace=props.get("Namespace"), metric_name=props.get("MetricName"),
            comparison_operator=props.get("ComparisonOperator"),
            evaluation_periods=int(props.get("EvaluationPeriods", 1)), period=int(props.get("Period", 60)),
            threshold=float(props.get("Threshold", 0)), statistic=props.get("Statistic"),
            description=props.get("AlarmDescription", ""), dimensions=props.get("Dimensions") or [],
            alarm_actions=props.get("AlarmActions") or [], ok_actions=props.get("OKActions") or [],
            treat_missing_data=props.get("TreatMissingData"),
        )
        return cls(name)


class EventInvokeConfigResource(CloudFormationModel):
    """AWS::Lambda::EventInvokeConfig in moto's stacks (moto's CloudFormation skips it), through
    moto's own PutFunctionEventInvokeConfig."""

    __module__ = "moto.awslambda.front"

    def __init__(self, function_name):
        self.physical_resource_id = function_name

    @staticmethod
    def cloudformation_type():
        return "AWS::Lambda::EventInvokeConfig"

    @staticmethod
    def cloudformation_name_type():
        return ""

    @classmethod
    def has_cfn_attr(cls, attr):
        return False

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.awslambda.models import lambda_backends

        props = cloudformation_json["Properties"]
        config = {key: props[key] for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
                  if props.get(key) is not None}
        lambda_backends[account_id][region_name].put_function_event_invoke_config(props["FunctionName"], config)
        return cls(props["FunctionName"])


class SnsSubscriptionResource(CloudFormationModel):
    """AWS::SNS::Subscription in moto's stacks (moto's CloudFormation skips it), through moto's
    own Subscribe: the functions subscribed to the topics teams' alarms notify."""

    __module__ = "moto.sns.front"

    def __init__(self, arn):
        self.physical_resource_id = arn

    @staticmethod
    def cloudformation_type():
        return "AWS::SNS::Subscription"

    @staticmethod
    def cloudformation_name_type():
        return ""

    @classmethod
    def has_cfn_attr(cls, attr):
        return False

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        from moto.sns.models import sns_backends

        props = cloudformation_json["Properties"]
        topic = props["TopicArn"]
        backend = sns_backends[topic.split(":")[4]][topic.split(":")[3]]
        subscription = backend.subscribe(topic, props["Endpoint"], props["Protocol"])
        return cls(subscription.arn)


# --- STS -------------------------------------------------------------------------------------

def trust_refusal(caller_account: str, role_arn: str, external_id, tagged: bool):
    """Why AWS would refuse this AssumeRole, or None: the role must exist in its account, and its
    trust policy must allow sts:AssumeRole (and sts:TagSession for a tagged session) to the
    caller's account, with the sts:ExternalId its condition names. aws:PrincipalOrgID is not
    evaluated: moto's accounts belong to no organization."""
    from moto.iam.models import iam_backends

    parts = role_arn.split(":")
    if len(parts) != 6 or not parts[5].startswith("role/"):
        return f"{role_arn} is not a role ARN"
    account, name = parts[4], parts[5].split("/")[-1]
    roles = [role for role in iam_backends[account]["aws"].roles.values() if role.name == name]
    if not roles:
        return f"role {role_arn} does not exist"
    document = roles[0].assume_role_policy_document
    document = json.loads(document) if isinstance(document, str) else document

    def allows(action):
        for statement in iam.as_list(document.get("Statement")):
            if statement.get("Effect") != "Allow" or action not in iam.as_list(statement.get("Action")):
                continue
            principals = iam.as_list((statement.get("Principal") or {}).get("AWS"))
            if not any(p in (caller_account, f"arn:aws:iam::{caller_account}:root") for p in principals):
                continue
            conditions = (statement.get("Condition") or {}).get("StringEquals") or {}
            wanted = conditions.get("sts:ExternalId")
            if wanted is not None and wanted != external_id:
                continue
            return True
        return False

    if not allows("sts:AssumeRole"):
        return f"the trust policy of {role_arn} does not let account {caller_account} assume it with this external id"
    if tagged and not allows("sts:TagSession"):
        return f"the trust policy of {role_arn} does not let account {caller_account} tag its sessions"
    return None


def patch_sts():
    from moto.sts.exceptions import STSClientError
    from moto.sts.responses import TokenResponse

    assume_role = TokenResponse.assume_role

    def assume_role_if_trusted(self):
        refusal = trust_refusal(
            self.current_account,
            self._get_param("RoleArn") or "",
            self._get_param("ExternalId"),
            any(key.startswith("Tags.member") for key in self.querystring),
        )
        if refusal:
            error = STSClientError("AccessDenied", f"User is not authorized to perform: sts:AssumeRole: {refusal}")
            error.code = "AccessDenied"
            raise error
        return assume_role(self)

    TokenResponse.assume_role = assume_role_if_trusted


# --- EventBridge -------------------------------------------------------------------------------

def patch_events():
    """PutEvents delivers to the rules' targets. moto raises on a rule targeting a Lambda function
    (it cannot run one) or an SNS topic, and lets a schedule rule, which has no pattern, match
    every event. Lambda targets are skipped (the tests run the functions as processes), SNS
    targets get the event published to the topic as EventBridge does, and schedules match no
    event."""
    from moto.sns.models import sns_backends

    rule_cls = events_models.Rule
    send = rule_cls.send_to_targets

    def send_to_targets(self, event, *args, **kwargs):
        if self.scheduled_expression or not self.event_pattern.matches_event(event):
            return None
        every_target = self.targets
        for target in every_target:
            if ":sns:" in target["Arn"]:
                account, region = target["Arn"].split(":")[4], target["Arn"].split(":")[3]
                sns_backends[account][region].publish(message=json.dumps(event, default=str), arn=target["Arn"])
        self.targets = [t for t in every_target if ":lambda:" not in t["Arn"] and ":sns:" not in t["Arn"]]
        try:
            return send(self, event, *args, **kwargs)
        finally:
            self.targets = every_target

    rule_cls.send_to_targets = send_to_targets

    # A delivery walks a bus's rules (and sets a rule's targets aside while it sends) while other
    # requests add and remove rules and targets: one at a time, or "changed size during
    # iteration" answers 500 and a target set aside can be lost.
    backend_cls = events_models.EventsBackend
    for name in ("put_events", "put_rule", "delete_rule", "enable_rule", "disable_rule",
                 "put_targets", "remove_targets", "create_event_bus", "delete_event_bus"):
        setattr(backend_cls, name, _one_at_a_time(getattr(backend_cls, name), _EVENTS_LOCK))


_EVENTS_LOCK = threading.RLock()


def _one_at_a_time(method, lock):
    def serialised(*args, **kwargs):
        with lock:
            return method(*args, **kwargs)
    return serialised


# --- Lambda ------------------------------------------------------------------------------------

CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d+/(?P<region>[^/]+)/(?P<service>[^/]+)/")


class LambdaAccountSettings:
    """GET /2016-08-19/account-settings/ from moto's Lambda backend."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO", "").rstrip("/") != "/2016-08-19/account-settings":
            return self.app(environ, start_response)
        from moto.awslambda.models import lambda_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        scope = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        region = scope["region"] if scope else "us-east-1"
        try:
            iam.authorize({"Authorization": environ.get("HTTP_AUTHORIZATION", "")}, "lambda", "GetAccountSettings",
                          lambda _region: [("*", iam.context_with_tags(lambda: {}))])
        except iam.AccessDenied as denied:
            return denied(environ, start_response)
        functions = list(lambda_backends[DEFAULT_ACCOUNT_ID][region].list_functions())
        limit = int(os.environ.get("MOTO_LAMBDA_CONCURRENCY_QUOTA", "1000"))
        reserved = sum(int(f.reserved_concurrency) for f in functions if f.reserved_concurrency)
        body = json.dumps({
            "AccountLimit": {
                "TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800,
                "ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": limit - reserved,
            },
            "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": len(functions)},
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


CONTROL_PATHS = ("/_front/cloudformation/stack-status", "/_front/deploy", "/_front/delay",
                 "/_front/delay/held", "/_front/boto3",
                 "/_front/dynamodb/table-status", "/_front/faults", "/_front/account-admin")

_admin_lock = threading.Lock()


def account_admin(account: str) -> dict:
    """Access keys that act in `account` (moto tells the account from the key's owner), for a
    test to set up another account of an organization: a user of that account's IAM, which the
    front's enforcement (for the hub's own users only) lets do anything."""
    from moto.iam.models import iam_backends

    backend = iam_backends[account]["aws"]
    with _admin_lock:
        if "front-admin" not in backend.users:
            backend.create_user("us-east-1", "front-admin")
        keys = backend.users["front-admin"].access_keys
        key = keys[0] if keys else backend.create_access_key("front-admin")
    return {"access_key": key.access_key_id, "secret_key": key.secret_access_key}


_boto3_lock = threading.Lock()
_boto3_session = []


def boto3_call(endpoint: str, request: dict):
    """One boto3 call against this front, for the tests' fixtures (services they have no Rust SDK
    for, answers the Rust SDK rejects): made here, where boto3 is loaded already, rather than
    in a new Python process per call. The answer is the call's JSON, or boto3's error."""
    import boto3

    # A session is not safe to share between threads; the clients it makes are.
    with _boto3_lock:
        if not _boto3_session:
            _boto3_session.append(boto3.session.Session())
        client = _boto3_session[0].client(
            request["service"], endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=request["access_key"], aws_secret_access_key=request["secret_key"])
    try:
        answer = getattr(client, request["method"])(**request["arguments"])
    except Exception as err:  # the test reads boto3's error as the call's result
        return "200 OK", {"error": f"{type(err).__name__}: {err}"}
    return "200 OK", {"answer": json.loads(json.dumps(answer, default=str))}


class ControlEndpoint:
    """Test controls, not AWS APIs: POST /_front/cloudformation/stack-status, /_front/deploy,
    /_front/account-admin ({"account"}),
    /_front/delay ({"action", "resource", "ms", "answer"}), /_front/delay/held ({"action",
    "resource", "timeout_ms"}: waits for the delayed request to arrive) and
    /_front/dynamodb/table-status ({"table", "status"}; ACTIVE restores moto's own)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if path not in CONTROL_PATHS:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        if path == "/_front/faults":
            with faults.FAULTS.lock if faults.FAULTS else threading.Lock():
                answer = {"counts": faults.FAULTS.counts if faults.FAULTS else {}}
            status = "200 OK"
        elif path == "/_front/delay":
            controls.add_delay(request["action"], request["resource"], int(request["ms"]),
                               bool(request.get("answer", False)))
            status, answer = "200 OK", {"delayed": request["action"]}
        elif path == "/_front/delay/held":
            held = controls.held(request["action"], request["resource"],
                                 float(request.get("timeout_ms", 30_000)) / 1000)
            status, answer = "200 OK", {"held": held}
        elif path == "/_front/dynamodb/table-status":
            if request["status"] == "ACTIVE":
                controls.TABLE_STATUS.pop(request["table"], None)
            else:
                controls.TABLE_STATUS[request["table"]] = request["status"]
            status, answer = "200 OK", {"table": request["table"], "status": request["status"]}
        elif path == "/_front/account-admin":
            status, answer = "200 OK", account_admin(request["account"])
        elif path == "/_front/boto3":
            status, answer = boto3_call(f"http://{environ['HTTP_HOST']}", request)
        elif path == "/_front/deploy":
            try:
                answer = iam.deploy(f"http://{environ['HTTP_HOST']}", request["stack"],
                                    request.get("parameters", {}), request.get("drop_actions", {}))
                status = "200 OK"
            except Exception:  # the test prints why the deployment failed
                answer, status = {"error": traceback.format_exc()}, "500 Internal Server Error"
        else:
            found = set_stack_status(request["stack"], request["status"], request.get("resource"),
                                     request.get("reason"), request.get("minutes_ago", 0))
            status = "200 OK" if found else "404 Not Found"
            answer = {"found": found}
        body = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


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


def patch_dynamodb():
    """DynamoDB applies a conditional write atomically; moto checks the condition, then writes,
    with nothing between two threads (the server serves requests in parallel). The leases rely
    on that atomicity: writes to a table run one at a time."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in ("put_item", "update_item", "delete_item", "batch_write_item",
                 "transact_write_items", "execute_transaction"):
        setattr(DynamoDBBackend, name, _one_at_a_time(getattr(DynamoDBBackend, name),
                                                      _DYNAMODB_WRITE_LOCK))


_DYNAMODB_WRITE_LOCK = threading.RLock()


def patch_dispatch():
    """moto finds each request's backend by listing its package's folders and trying hundreds of
    URL patterns, under one lock: the answer depends on the host alone, so it is worked out once
    per host. And the request log goes nowhere (stderr is closed), so it is not written."""
    from moto import backends
    from moto.moto_server import werkzeug_app

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules
    find = werkzeug_app.DomainDispatcherApplication.get_backend_for_host
    found: dict = {}

    def get_backend_for_host(self, host):
        if host not in found:
            found[host] = find(self, host)
        return found[host]

    werkzeug_app.DomainDispatcherApplication.get_backend_for_host = get_backend_for_host
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def build_app():
    patch_dispatch()
    patch_sts()
    patch_sqs()
    patch_dynamodb()
    patch_cloudformation()
    patch_events()
    patch_application_autoscaling()
    patch_cloudwatch_percentiles()
    patch_logs_filter_patterns()
    iam.patch_moto()
    controls.patch_controls()
    return ControlEndpoint(controls.DelayedAnswers(LambdaAccountSettings(CborBridge(
        faults.FaultInjection(DomainDispatcherApplication(create_backend_app))))))


def exit_when_stdin_closes():
    sys.stdin.read()
    os._exit(0)


def main():
    if os.environ.get("FRONT_LOG"):
        # Where moto's own failures (answered 500) are written, for a person finding out why.
        logging.basicConfig(filename=os.environ["FRONT_LOG"], level=logging.ERROR,
                            format=f"%(asctime)s front {os.getpid()}: %(message)s")
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
