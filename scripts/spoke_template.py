"""Writes spoke.yaml: what each account the hub remediates gets, deployable as a
service-managed StackSet to an OU.

The spoke role's permissions are the functions' own statements from template.yaml, less those
on the hub's resources (its audit table, its report bus, its metrics): the same actions, with
the same name patterns (ManagedResources) and the same runbook:managed tag conditions, so the
two cannot drift (tests/tests/template.rs checks that spoke.yaml is what this script makes).

    .venv/bin/python scripts/spoke_template.py           # rewrite spoke.yaml
    .venv/bin/python scripts/spoke_template.py --check   # exit 1 if spoke.yaml is stale
"""

import json
import sys
from pathlib import Path

import yaml
from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parent.parent

FUNCTIONS = ["LimitScalerFunction", "DlqRedriverFunction", "AlarmResponderFunction", "HealthProberFunction"]

# Statements on the hub's own resources, which the functions keep their own roles for.
HUB_ONLY = {"AssumeSpokeRoles", "PublishReports", "AuditTable", "KillSwitch", "Scorecard", "SettlePendingVerifications", "PublishProbeMetrics"}

# The template's parameters and conditions the kept statements use.
SHARED_PARAMETERS = ["ManagedResources", "LimitsTable", "QueueKmsKeyArns"]


def plain(node):
    """cfn-lint's nodes as plain JSON values."""
    return json.loads(json.dumps(node))


def sid(statement):
    if "Fn::If" in statement:
        return sid(statement["Fn::If"][1])
    return statement.get("Sid")


def kept_statements(template, function):
    statements = template["Resources"][function]["Properties"]["Policies"][0]["Statement"]
    return [any_region(plain(s)) for s in statements if sid(s) not in HUB_ONLY]


def any_region(node):
    """One role serves every region the hub acts in (IAM is global; RoleRegion creates it
    once), so its ARNs name any region where the function's name their own."""
    if isinstance(node, str):
        return node.replace("${AWS::Region}", "*")
    if isinstance(node, list):
        return [any_region(item) for item in node]
    if isinstance(node, dict):
        return {key: any_region(value) for key, value in node.items()}
    return node


def spoke(template):
    parameters = {
        "HubAccountId": {
            "Type": "String",
            "AllowedPattern": "^[0-9]{12}$",
            "Description": "The account of the hub deployment (template.yaml), whose functions assume the spoke role.",
        },
        "OrganizationId": {
            "Type": "String",
            "AllowedPattern": "^o-[a-z0-9]{10,32}$",
            "Description": "The AWS Organizations id: only principals of this organization may assume the role (aws:PrincipalOrgID).",
        },
        "ExternalId": {
            "Type": "String",
            "NoEcho": True,
            "MinLength": 16,
            "Description": "The external id the hub passes when it assumes the role (the hub's SPOKE_EXTERNAL_ID).",
        },
        "HubEventBusArn": {
            "Type": "String",
            "AllowedPattern": "^arn:aws[a-z-]*:events:[a-z0-9-]+:[0-9]{12}:event-bus/.+$",
            "Description": "The hub's event bus, which this account's alarm and stack events are forwarded to.",
        },
        "AlarmNamePrefix": {
            "Type": "String",
            "Default": "",
            "Description": "Only alarms whose names start with it are forwarded (empty: every alarm).",
        },
        "RoleRegion": {
            "Type": "String",
            "Default": "us-east-1",
            "Description": "The one region whose stack instance creates the role (IAM is global: a StackSet deployed to several regions would otherwise create it twice); every region forwards its events.",
        },
    }
    for name in SHARED_PARAMETERS:
        parameters[name] = plain(template["Parameters"][name])
    conditions = {name: plain(value) for name, value in template["Conditions"].items() if name.startswith("ManagedName") or name in ("HasLimitsTable", "HasQueueKmsKeys")}
    conditions["CreatesRole"] = {"Fn::Equals": [{"Ref": "AWS::Region"}, {"Ref": "RoleRegion"}]}
    policies = [
        {"PolicyName": function.removesuffix("Function"), "PolicyDocument": {"Version": "2012-10-17", "Statement": kept_statements(template, function)}}
        for function in FUNCTIONS
    ]
    hub_role = {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:root"}
    resources = {
        "RunbookAutomationSpoke": {
            "Type": "AWS::IAM::Role",
            "Condition": "CreatesRole",
            "Metadata": {
                "checkov": {
                    "skip": [
                        {"id": "CKV_AWS_111", "comment": "The write actions are scoped by ManagedResources names or the runbook:managed tag; the ones with Resource * (GetMetricData, DescribeScalableTargets, GetAccountSettings) have no resource-level permissions."},
                    ]
                }
            },
            "Properties": {
                # A fixed name: the hub finds the role in every account at the same ARN.
                "RoleName": "RunbookAutomationSpoke",
                "Description": "Assumed by the runbook automation hub's functions to remediate this account.",
                "MaxSessionDuration": 3600,
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": hub_role},
                            "Action": "sts:AssumeRole",
                            "Condition": {"StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}, "sts:ExternalId": {"Ref": "ExternalId"}}},
                        },
                        {
                            # The hub tags each session with the function and the event it handles.
                            "Effect": "Allow",
                            "Principal": {"AWS": hub_role},
                            "Action": "sts:TagSession",
                            "Condition": {
                                "StringEquals": {"aws:PrincipalOrgID": {"Ref": "OrganizationId"}},
                                "ForAllValues:StringEquals": {"aws:TagKeys": ["runbook-function", "runbook-session"]},
                            },
                        },
                    ],
                },
                "Policies": policies,
            },
        },
        "ForwardToHubRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "Lets EventBridge forward this account's alarm and stack events to the hub's bus.",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"}, "Action": "sts:AssumeRole"}],
                },
                "Policies": [
                    {
                        "PolicyName": "PutEventsOnHubBus",
                        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "events:PutEvents", "Resource": {"Ref": "HubEventBusArn"}}]},
                    }
                ],
            },
        },
        "ForwardToHub": {
            "Type": "AWS::Events::Rule",
            "Properties": {
                "Description": "This account's alarm state changes and stack status changes, to the hub's bus (the event unchanged).",
                "EventPattern": {
                    "$or": [
                        {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"], "detail": {"alarmName": [{"prefix": {"Ref": "AlarmNamePrefix"}}]}},
                        {"source": ["aws.cloudformation"], "detail-type": ["CloudFormation Stack Status Change"]},
                    ]
                },
                "Targets": [{"Id": "hub-bus", "Arn": {"Ref": "HubEventBusArn"}, "RoleArn": {"Fn::GetAtt": ["ForwardToHubRole", "Arn"]}}],
            },
        },
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Runbook automation spoke: the role the hub's functions assume to remediate this account, and the rule that forwards its alarms and stack events to the hub. Deploy as a service-managed StackSet to an OU.",
        "Parameters": parameters,
        "Conditions": conditions,
        "Resources": resources,
        "Outputs": {"SpokeRoleArn": {"Condition": "CreatesRole", "Value": {"Fn::GetAtt": ["RunbookAutomationSpoke", "Arn"]}}},
    }


def render(template):
    header = "# Generated by scripts/spoke_template.py from template.yaml: edit those, then run it.\n"
    return header + yaml.safe_dump(plain(spoke(template)), sort_keys=False, width=100)


def main():
    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    text = render(template)
    path = ROOT / "spoke.yaml"
    if "--check" in sys.argv:
        if not path.exists() or path.read_text() != text:
            print("spoke.yaml is not what scripts/spoke_template.py makes from template.yaml: run it", file=sys.stderr)
            sys.exit(1)
        return
    path.write_text(text)


if __name__ == "__main__":
    main()
