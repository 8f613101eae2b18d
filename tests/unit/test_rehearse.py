"""The deploy rehearsal's own parts (ops/rehearse.py) that need no moto server.

The rehearsal itself is tests/rehearsal (``make deploy-rehearsal``).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import boto3
from chalice.app import Chalice
from moto.awslambda.models import LambdaBackend, lambda_backends

from ops import rehearse
from tests.support import REGION


def _app() -> Chalice:
    tiny = Chalice(app_name="tiny")

    @tiny.lambda_function(name="plain")
    def plain(event: dict[str, Any], context: Any) -> None:
        """A function invoked by hand."""

    @tiny.lambda_function(name="big")
    def big(event: dict[str, Any], context: Any) -> None:
        """A function with settings of its own at the top level."""

    @tiny.schedule("rate(1 hour)", name="hourly")
    def hourly(event: Any) -> None:
        """A scheduled function with settings of its own in the stage."""

    return tiny


def test_expected_functions_take_each_setting_from_where_chalice_looks_first(
    tmp_path: Path,
) -> None:
    # Given settings at the top level, in the stage, and per function in both
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "app_name": "tiny",
                "lambda_timeout": 300,
                "lambda_functions": {"big": {"lambda_timeout": 900, "lambda_memory_size": 1024}},
                "stages": {
                    "dev": {
                        "lambda_memory_size": 256,
                        "iam_policy_file": "policy-dev.json",
                        "lambda_functions": {
                            "hourly": {"lambda_timeout": 30, "iam_policy_file": "hourly.json"}
                        },
                    },
                    "bare": {},
                },
            }
        )
    )
    (tmp_path / "policy-dev.json").write_text('{"Statement": "dev"}')
    (tmp_path / "hourly.json").write_text('{"Statement": "hourly"}')
    (tmp_path / "policy-bare.json").write_text('{"Statement": "bare"}')

    # When the expected functions are derived for each stage
    dev = rehearse.expected_functions(_app(), "dev", config)
    bare = rehearse.expected_functions(_app(), "bare", config)

    # Then the stage's per-function settings come first, then the stage's, then the top
    # level's per-function ones, then the top level's, then Chalice's defaults
    assert {name: (f.handler, f.memory, f.timeout, f.policy) for name, f in dev.items()} == {
        "tiny-dev-plain": ("app.plain", 256, 300, {"Statement": "dev"}),
        "tiny-dev-big": ("app.big", 256, 900, {"Statement": "dev"}),
        "tiny-dev-hourly": ("app.hourly", 256, 30, {"Statement": "hourly"}),
    }
    assert {name: (f.memory, f.timeout, f.policy) for name, f in bare.items()} == {
        "tiny-bare-plain": (128, 300, {"Statement": "bare"}),
        "tiny-bare-big": (1024, 900, {"Statement": "bare"}),
        "tiny-bare-hourly": (128, 300, {"Statement": "bare"}),
    }
    assert rehearse.expected_rules(_app(), "dev", config) == {
        "tiny-dev-hourly": rehearse.ExpectedRule("tiny-dev-hourly", "rate(1 hour)", None)
    }


def _function(name: str, role: str) -> str:
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "")
    return str(
        boto3.client("lambda", region_name=REGION).create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": code.getvalue()},
        )["FunctionArn"]
    )


def test_the_servers_mapping_filter_matches_a_function_by_name_or_arn_as_aws_does(
    aws: None,
) -> None:
    # Given a queue's event source created with the function's ARN, as Chalice creates it
    role = boto3.client("iam").create_role(
        RoleName="consumer", AssumeRolePolicyDocument=json.dumps({"Statement": []})
    )["Role"]["Arn"]
    consumer, other = _function("consumer", role), _function("other", role)
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="work")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    boto3.client("lambda", region_name=REGION).create_event_source_mapping(
        EventSourceArn=queue["QueueArn"], FunctionName=consumer
    )
    account = boto3.client("sts").get_caller_identity()["Account"]
    backend = lambda_backends[account][REGION]

    # When the mappings are listed by the function's name
    unpatched = list(backend.list_event_source_mappings("", "consumer"))
    listed = rehearse.list_event_source_mappings_by_name_or_arn(
        LambdaBackend.list_event_source_mappings
    )

    # Then moto alone finds none; patched, a name or an ARN finds the function's own only
    assert unpatched == []
    assert [m.function_arn for m in listed(backend, None, "consumer")] == [consumer]
    assert [m.function_arn for m in listed(backend, queue["QueueArn"], consumer)] == [consumer]
    assert listed(backend, None, other) == []
    assert listed(backend, None, "missing") == []
    assert len(listed(backend, queue["QueueArn"], None)) == 1
