"""IAM enforcement for requests signed by an IAM user's access key, and template deployment.

Requests signed with keys moto's IAM does not know (the tests' fixture credentials) pass as an
administrator's would. Requests signed with an IAM user's key are allowed only if that user's
inline policies allow the action on the resource, with the resource's ARN and condition keys
computed from the request as AWS does.

moto has an enforcement switch (INITIAL_NO_AUTH_ACTION_COUNT) and its hook is used here, but its
own evaluation checks every action against resource "*" (so any policy scoped to ARNs denies
everything) and treats an Allow whose condition it cannot evaluate as an explicit Deny. The
evaluation below covers what template.yaml's policies use: Action, Resource (with * and ?),
Effect Allow/Deny, and StringEquals/StringLike conditions on aws:ResourceTag/<key> and
cloudwatch:namespace. Anything else raises, so an unsupported policy fails the test instead of
passing it.
"""

from __future__ import annotations

import ast
import io
import json
import re
import threading
import zipfile
from urllib.parse import unquote

import boto3
import botocore.config
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.models import IAMBackend
from werkzeug.exceptions import HTTPException

from sam_template import DEFAULT_CODE_URI, transformed

ACCESS_KEY = re.compile(r"Credential=(?P<key>[^/]+)/\d+/(?P<region>[^/]+)/(?P<service>[^/]+)/")
# Signing names that differ from the IAM service prefix.
IAM_PREFIX = {"monitoring": "cloudwatch"}
# Batch APIs are authorised as their single-message action.
BATCH_ACTIONS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
JSON_ERROR_SERVICES = {"dynamodb", "monitoring", "sqs", "lambda", "application-autoscaling", "logs", "apigateway"}


class ServiceError(HTTPException):
    """An AWS error, in the protocol of the service that was called."""

    def __init__(self, service: str, status: int, code: str, message: str):
        if service in JSON_ERROR_SERVICES:
            body = json.dumps({"__type": code, "message": message, "Message": message})
        else:
            kind = "Sender" if status < 500 else "Receiver"
            body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
                    f"<Message>{message}</Message></Error><RequestId>front</RequestId></ErrorResponse>")
        self.code = status
        super().__init__(description=body)


class AccessDenied(ServiceError):
    """A denied request, as the service that denied it answers."""

    def __init__(self, service: str, user: str, action: str, resource: str):
        message = (f"User: {user} is not authorized to perform: {action} on resource: {resource} "
                   "because no identity-based policy allows the action")
        code = "AccessDeniedException" if service in JSON_ERROR_SERVICES else "AccessDenied"
        super().__init__(service, 403 if service in ("lambda", "apigateway") else 400, code, message)


def iam_user_of(access_key: str):
    """The moto IAM user owning this access key, or None for keys IAM does not know."""
    from moto.iam.models import iam_backends

    # A copy: other requests add users meanwhile (a deploy).
    for user in list(iam_backends[DEFAULT_ACCOUNT_ID]["aws"].users.values()):
        if any(key.access_key_id == access_key for key in user.access_keys):
            return user
    return None


def glob(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    regex = "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"
    return re.match(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def as_list(value):
    return value if isinstance(value, list) else [value]


def condition_holds(conditions: dict, context) -> bool:
    for operator, tests in conditions.items():
        if operator not in ("StringEquals", "StringLike"):
            raise RuntimeError(f"front IAM: condition operator {operator} is not implemented")
        for key, expected in tests.items():
            actual = context(key)
            if actual is None:
                return False
            match = (lambda e: e == actual) if operator == "StringEquals" else (lambda e: glob(e, actual))
            if not any(match(e) for e in as_list(expected)):
                return False
    return True


def allowed(policies: list[dict], action: str, resource: str, context) -> bool:
    permitted = False
    for policy in policies:
        for statement in as_list(policy["Statement"]):
            if set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}:
                raise RuntimeError(f"front IAM: statement elements {sorted(statement)} are not implemented")
            if not any(glob(a, action, case_sensitive=False) for a in as_list(statement["Action"])):
                continue
            if not any(glob(r, resource) for r in as_list(statement["Resource"])):
                continue
            if not condition_holds(statement.get("Condition", {}), context):
                continue
            if statement["Effect"] == "Deny":
                return False
            permitted = True
    return permitted


def user_policies(user) -> list[dict]:
    return [json.loads(doc) if isinstance(doc, str) else doc for doc in user.policies.values()]


def assumed_role_of(access_key: str):
    """The role whose session this access key is (AssumeRole), in any account, or None."""
    from moto.iam.models import iam_backends

    for backends in list(iam_backends.values()):
        key = backends["aws"].access_keys.get(access_key)
        role_arn = getattr(key, "role_arn", None)
        if role_arn:
            try:
                return backends["aws"].get_role_by_arn(role_arn)
            except Exception:  # the role was deleted after the session was made
                return None
    return None


def authorize(headers, service_scope: str, action_name: str, targets) -> None:
    """Raises AccessDenied unless the signing user may perform the action on every target.

    `targets` is called only for IAM users: it returns [(resource_arn, context)] where context
    maps a condition key to its value (None when the request has no such value)."""
    found = ACCESS_KEY.search(headers.get("Authorization", ""))
    if not found:
        return
    user = iam_user_of(found["key"])
    if user is not None:
        principal, policies = user.arn, user_policies(user)
    else:
        # A spoke role session: the role's inline policies (spoke.yaml's), in its account.
        role = assumed_role_of(found["key"])
        if role is None:
            return
        principal = role.arn
        policies = [as_cloudformation_made_it(doc) for doc in role.policies.values()]
    action = f"{IAM_PREFIX.get(service_scope, service_scope)}:{action_name}"
    action = BATCH_ACTIONS.get(action, action)
    for resource, context in targets(found["region"]):
        if not allowed(policies, action, resource, context):
            raise AccessDenied(service_scope, principal, action, resource)


# --- The ARN and condition keys of a request, per service ----------------------------------------

def request_param(response, name):
    params = getattr(response, "params", None)
    if isinstance(params, dict) and name in params:
        return params[name]
    body = response.body
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body) if body else {}
        except ValueError:
            body = {}
    if isinstance(body, dict) and name in body:
        return body[name]
    value = response.querystring.get(name)
    return value[0] if isinstance(value, list) and value else value


def tag_dict(tags) -> dict:
    if isinstance(tags, list):
        return {tag["Key"]: tag["Value"] for tag in tags}
    return dict(tags or {})


def context_with_tags(tags_of, extra=None):
    def context(key):
        if extra and key in extra:
            return extra[key]
        if key.startswith("aws:ResourceTag/"):
            return tag_dict(tags_of()).get(key.removeprefix("aws:ResourceTag/"))
        raise RuntimeError(f"front IAM: condition key {key} is not implemented")
    return context


# DynamoDB actions authorised on "*" whatever their parameters (no resource-level permissions).
DYNAMODB_UNSCOPED = {"ListBackups", "ListTables"}


def dynamodb_targets(response, region):
    from moto.dynamodb.models import dynamodb_backends

    tables = dynamodb_backends[response.current_account][region].tables
    # A backup (DescribeBackup, DeleteBackup) or a table named by its ARN (ListTagsOfResource).
    arn = request_param(response, "BackupArn") or request_param(response, "ResourceArn")
    if arn and response._get_action() not in DYNAMODB_UNSCOPED:
        # A backup carries no tags of its own (its table's are not its).
        name = None if "/backup/" in arn else arn.split(":table/", 1)[-1]
        return [(arn, context_with_tags(lambda: tables[name].tags if name in tables else {}))]
    name = request_param(response, "TableName")
    if not name or response._get_action() in DYNAMODB_UNSCOPED:
        return [("*", context_with_tags(lambda: {}))]
    arn = f"arn:aws:dynamodb:{region}:{response.current_account}:table/{name}"
    index = request_param(response, "IndexName")
    resource = f"{arn}/index/{index}" if index else arn
    return [(resource, context_with_tags(lambda: tables[name].tags if name in tables else {}))]


def sqs_targets(response, region):
    from moto.sqs.models import sqs_backends

    backend = sqs_backends[response.current_account][region]
    name = request_param(response, "QueueName") or response._get_queue_name()
    queue = backend.queues.get(name)
    resource = f"arn:aws:sqs:{region}:{response.current_account}:{name}"
    return [(resource, context_with_tags(lambda: queue.tags if queue else {}))]


FUNCTION_IN_PATH = re.compile(r"/functions/(?P<name>[^/]+)")


def lambda_targets(response, region):
    from moto.awslambda.models import lambda_backends

    found = FUNCTION_IN_PATH.search(unquote(response.path))
    if not found:
        return [("*", context_with_tags(lambda: {}))]
    name = found["name"]
    if name.startswith("arn:"):
        name = name.split(":")[6]
    name, _, qualifier = name.partition(":")
    resource = f"arn:aws:lambda:{region}:{response.current_account}:function:{name}"
    if qualifier:
        resource += f":{qualifier}"
    backend = lambda_backends[response.current_account][region]

    def tags():
        try:
            return backend.get_function(name).tags
        except Exception:
            return {}
    return [(resource, context_with_tags(tags))]


def cloudformation_targets(response, region):
    from moto.cloudformation.models import cloudformation_backends

    name = request_param(response, "StackName")
    if not name:
        return [(f"arn:aws:cloudformation:{region}:{response.current_account}:stack/*", context_with_tags(lambda: {}))]
    backend = cloudformation_backends[response.current_account][region]
    try:
        stack = backend.get_stack(name)
    except Exception:
        stack = None
    resource = stack.stack_id if stack else f"arn:aws:cloudformation:{region}:{response.current_account}:stack/{name}/*"
    return [(resource, context_with_tags(lambda: stack.tags if stack else {}))]


def cloudwatch_targets(response, region):
    alarm = f"arn:aws:cloudwatch:{region}:{response.current_account}:alarm:"
    names = request_param(response, "AlarmNames") or as_list(request_param(response, "AlarmName") or [])
    arn = request_param(response, "ResourceARN")
    namespace = request_param(response, "Namespace")
    if names:
        resources = [alarm + name for name in names]
    elif arn:
        resources = [arn]
    elif response._get_action() == "DescribeAlarms":
        resources = [alarm + "*"]
    else:
        resources = ["*"]
    context = context_with_tags(lambda: {}, {"cloudwatch:namespace": namespace})
    return [(resource, context) for resource in resources]


def events_targets(response, region):
    entries = request_param(response, "Entries") or [{}]
    buses = {entry.get("EventBusName") or "default" for entry in entries}
    return [(bus if bus.startswith("arn:") else f"arn:aws:events:{region}:{response.current_account}:event-bus/{bus}",
             context_with_tags(lambda: {})) for bus in sorted(buses)]


def application_autoscaling_targets(response, region):
    # DescribeScalableTargets has no resource-level permissions in AWS: it is judged against "*".
    if response._get_action() != "RegisterScalableTarget":
        return [("*", context_with_tags(lambda: {}))]
    from moto.applicationautoscaling.models import applicationautoscaling_backends

    backend = applicationautoscaling_backends[response.current_account][region]
    dimension = request_param(response, "ScalableDimension")
    target = backend.targets.get(dimension, {}).get(request_param(response, "ResourceId"))
    arn = target.arn if target else f"arn:aws:application-autoscaling:{region}:{response.current_account}:scalable-target/new"
    return [(arn, context_with_tags(lambda: {}))]


def logs_targets(response, region):
    group = request_param(response, "logGroupName") or request_param(response, "logGroupIdentifier") or "*"
    return [(f"arn:aws:logs:{region}:{response.current_account}:log-group:{group}:*", context_with_tags(lambda: {}))]


def apigateway_targets(response, region):
    # API Gateway's resources are the paths of its management API, with no account; HTTP APIs'
    # requests go to /v2/apis/..., their ARNs say /apis/....
    path = response.path.removeprefix("/v2")
    return [(f"arn:aws:apigateway:{region}::{path}", context_with_tags(lambda: {}))]


def sts_targets(response, region):
    return [(request_param(response, "RoleArn") or "*", context_with_tags(lambda: {}))]


TARGETS = {
    "sts": sts_targets,
    "apigateway": apigateway_targets,
    "logs": logs_targets,
    "application-autoscaling": application_autoscaling_targets,
    "events": events_targets,
    "dynamodb": dynamodb_targets,
    "sqs": sqs_targets,
    "lambda": lambda_targets,
    "cloudformation": cloudformation_targets,
    "monitoring": cloudwatch_targets,
}


def patch_moto():
    """Every moto request handler calls this hook before acting (moto.core.responses.call_action)."""

    def authenticate_and_authorize(self, iam_request_cls, resource="*"):
        found = ACCESS_KEY.search(self.headers.get("Authorization", ""))
        if not found:
            return
        service = found["service"]
        # API Gateway's IAM actions are the HTTP methods of its management API.
        action = self.method if service == "apigateway" else self._get_action()

        def targets(region):
            if service not in TARGETS:
                # Never "*": a policy scoped to ARNs would then deny what AWS allows, and one
                # granting "*" allow what AWS denies, both for the wrong reason.
                raise ServiceError(
                    service, 501, "NotImplemented",
                    f"front IAM: no resource mapping for service {service} ({action}): add one to "
                    "TARGETS in tests/moto_front/iam.py before a function calls it")
            return TARGETS[service](self, region)
        authorize(self.headers, service, action, targets)
        # A tagged role session needs sts:TagSession besides sts:AssumeRole.
        if service == "sts" and any(key.startswith("Tags.member") for key in self.querystring):
            authorize(self.headers, service, "TagSession", targets)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize
    # moto's create_role scans roles.values() while another request may add one (the tests run
    # in parallel against one emulator): scan a copy.
    IAMBackend.get_roles = lambda self: list(self.roles.values())


# --- Deploying template.yaml -------------------------------------------------------------------

_artifact_lock = threading.Lock()


def deploy(endpoint: str, stack_name: str, parameters: dict, drop_actions: dict) -> dict:
    """Creates template.yaml (transformed by aws-sam-translator) as a moto stack, then one IAM
    user per function holding exactly its role's inline policies (less `drop_actions`, a map of
    logical function id to actions removed, for proving that a missing action is caught)."""
    session = boto3.session.Session(aws_access_key_id="deployer", aws_secret_access_key="deployer",
                                    region_name="us-east-1")
    # One attempt, however long it takes: under a loaded machine a CreateStack can outlast
    # botocore's 60-second read timeout, and its retry then meets the first attempt's resources
    # ("The specified log group already exists").
    patient = botocore.config.Config(read_timeout=900, retries={"max_attempts": 1, "mode": "standard"})
    client = lambda name: session.client(name, endpoint_url=endpoint, config=patient)  # noqa: E731
    with _artifact_lock:
        bucket, key = DEFAULT_CODE_URI.removeprefix("s3://").split("/", 1)
        s3 = client("s3")
        if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=bucket)
            archive = io.BytesIO()
            with zipfile.ZipFile(archive, "w") as zipped:
                # moto never runs the code; the functions under test run as local processes.
                zipped.writestr("bootstrap", "#!/bin/sh\n")
            s3.put_object(Bucket=bucket, Key=key, Body=archive.getvalue())

    cloudformation = client("cloudformation")
    # moto creates a stack's resources in passes, and a pass disturbed by another request running
    # at the same time is made again, creating its log groups a second time ("The specified log
    # group already exists"). The stack is then created afresh under a new name.
    for attempt in range(3):
        try:
            cloudformation.create_stack(
                StackName=stack_name,
                TemplateBody=json.dumps(transformed()),
                Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
            break
        # moto answers this error as JSON, which botocore fails to parse as the query
        # protocol's XML: it arrives as a parser error naming the body.
        except Exception as error:  # noqa: BLE001
            if "already exists" not in str(error) or attempt == 2:
                raise
            stack_name = f"{stack_name}-{attempt + 2}"
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    # moto lists the resource types it cannot create without a logical id; they are left out.
    resources = {
        r["LogicalResourceId"]: {"type": r["ResourceType"], "physical_id": r.get("PhysicalResourceId")}
        for r in cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
        if "LogicalResourceId" in r
    }
    iam = client("iam")
    credentials = {}
    for logical, resource in resources.items():
        if resource["type"] != "AWS::Lambda::Function":
            continue
        role = resources[f"{logical}Role"]["physical_id"]
        user = f"{stack_name}-{logical}"[:64]
        iam.create_user(UserName=user)
        for policy_name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            document = iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
            document = without_actions(as_cloudformation_made_it(document), set(drop_actions.get(logical, [])))
            if not document["Statement"]:
                continue
            iam.put_user_policy(UserName=user, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        credentials[logical] = {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    return {
        "stack": stack_name,
        "status": stack["StackStatus"],
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "resources": resources,
        "credentials": credentials,
    }


def as_cloudformation_made_it(document):
    """The policy as CloudFormation would store it. moto's stack keeps an inline role policy as
    the Python repr of its dict, and leaves AWS::NoValue in a list as None instead of removing it."""
    if isinstance(document, str):
        document = ast.literal_eval(document)

    def without_none(value):
        if isinstance(value, list):
            return [without_none(v) for v in value if v is not None]
        if isinstance(value, dict):
            return {k: without_none(v) for k, v in value.items() if v is not None}
        return value
    return dict(without_none(document), Version="2012-10-17")


def without_actions(document, dropped: set[str]):
    if not dropped:
        return document
    statements = []
    for statement in as_list(document["Statement"]):
        actions = [a for a in as_list(statement["Action"]) if a not in dropped]
        if actions:
            statements.append(dict(statement, Action=actions))
    return dict(document, Statement=statements)
