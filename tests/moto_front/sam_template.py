"""template.yaml as AWS CloudFormation sees it: transformed by aws-sam-translator.

`python sam_template.py [code_uri]` prints the transformed template as JSON. The functions'
`CodeUri: .` (which `sam build` replaces with the built artifacts) becomes `code_uri`, an S3
location, as `sam package` would make it.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

TEMPLATE = pathlib.Path(__file__).resolve().parents[2] / "template.yaml"
DEFAULT_CODE_URI = "s3://runbook-automation-artifacts/functions.zip"


class NoManagedPolicies:
    """The template names no AWS managed policy, so SAM need not list IAM's (it would call AWS)."""

    def load(self):
        return {}


def transformed(code_uri: str = DEFAULT_CODE_URI, parameters: dict | None = None) -> dict:
    # The translator only needs a region to pick the partition of the ARNs it writes.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = yaml_parse(TEMPLATE.read_text())
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = code_uri
    return transform(template, parameters or {}, NoManagedPolicies())


if __name__ == "__main__":
    print(json.dumps(transformed(*sys.argv[1:2]), indent=1))
