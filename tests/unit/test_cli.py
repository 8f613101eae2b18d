"""The operator CLI, driven through Click's runner against moto."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from click.testing import CliRunner

from chalicelib import registry
from chalicelib.config import Settings
from ops import infra
from ops.cli import cli
from ops.provisioning import provision
from tests.support import REGION


def test_provision_creates_missing_tables_then_finds_them(aws: None) -> None:
    runner = CliRunner()

    first = runner.invoke(cli, ["provision"])
    second = runner.invoke(cli, ["provision"])

    assert first.exit_code == 0, first.output
    assert "test-notifications: created" in first.output
    assert first.output.count("created") == 6
    assert second.exit_code == 0
    assert second.output.count("already exists") == 6


def test_provision_names_the_missing_variable(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTES_TABLE")

    result = CliRunner().invoke(cli, ["provision"])

    assert result.exit_code == 2
    assert "NOTES_TABLE is not set" in result.output


def test_provision_takes_the_table_names_of_a_stage(aws: None) -> None:
    result = CliRunner().invoke(cli, ["--stage", "dev", "provision"])

    assert result.exit_code == 0, result.output
    assert "dev-applications: created" in result.output


def test_provision_of_a_stage_creates_its_fanout_queue_redriving_to_its_own_dlq(
    aws: None,
) -> None:
    # When a stage is provisioned twice
    first = CliRunner().invoke(cli, ["--stage", "dev", "provision"])
    second = CliRunner().invoke(cli, ["--stage", "dev", "provision"])

    # Then its fan-out queue and dead-letter queue are created once, then found
    assert first.exit_code == 0, first.output
    assert "loan-reminders-dev-fanout-dead-letters: created" in first.output
    assert "loan-reminders-dev-fanout: created" in first.output
    assert "loan-reminders-dev-fanout: already exists" in second.output
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName="loan-reminders-dev-fanout")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":loan-reminders-dev-fanout-dead-letters")
    assert int(redrive["maxReceiveCount"]) == infra.FANOUT_MAX_RECEIVES
    assert attributes["VisibilityTimeout"] == str(infra.FANOUT_VISIBILITY_SECONDS)


def test_an_unknown_stage_is_a_usage_error(aws: None) -> None:
    result = CliRunner().invoke(cli, ["--stage", "staging", "provision"])

    assert result.exit_code == 2
    assert "unknown stage 'staging'" in result.output


def test_provision_adds_the_indexes_an_existing_crm_table_lacks(
    aws: None, settings: Settings
) -> None:
    # Given the CRM's applications table exists, but without the index the stale check queries
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    dynamodb.create_table(
        TableName="test-applications",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    # When provision runs (polling briskly: DynamoDB Local reports CREATING for a moment),
    # then again through the CLI
    report = dict(provision(settings, poll_seconds=0.05))
    again = CliRunner().invoke(cli, ["provision"])

    # Then the index is added once, with the model's keys, and the other tables are created
    assert report["test-applications"] == "index stage-stage_last_updated-index added"
    assert report["test-notes"] == "created"
    assert again.exit_code == 0, again.output
    assert "test-applications: already exists" in again.output
    table = dynamodb.describe_table(TableName="test-applications")["Table"]
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "stage-stage_last_updated-index"
    assert index["IndexStatus"] == "ACTIVE"
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        ("stage", "HASH"),
        ("stage_last_updated", "RANGE"),
    ]


def _deployed_dev_stage(*, with_consumer: bool = True) -> str:
    """What `chalice deploy --stage dev` leaves: the functions (each with its variables) and
    the consumer's event source on the fan-out queue, without partial batch responses."""
    CliRunner().invoke(cli, ["--stage", "dev", "provision"])
    role = boto3.client("iam").create_role(
        RoleName="loan-reminders-dev", AssumeRolePolicyDocument=json.dumps({"Statement": []})
    )["Role"]["Arn"]
    functions = boto3.client("lambda", region_name=REGION)
    names = [f"loan-reminders-dev-check_{name}" for name in registry.NAMES]
    for name in [*names, "loan-reminders-dev-deliver_fanout"]:
        functions.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _zip_of("app.py", "")},
            Environment={"Variables": {"SENDER_EMAIL": "reminders@lender.example.com.au"}},
        )
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.get_queue_url(QueueName="loan-reminders-dev-fanout")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    if with_consumer:
        functions.create_event_source_mapping(
            EventSourceArn=arn["QueueArn"], FunctionName="loan-reminders-dev-deliver_fanout"
        )
    return url


def _zip_of(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


def test_fanout_on_turns_on_what_chalice_cannot_set_and_keeps_each_functions_variables(
    aws: None,
) -> None:
    # Given the dev stage as `chalice deploy` leaves it
    url = _deployed_dev_stage()

    # When the fan-out is turned on, twice
    first = CliRunner().invoke(cli, ["--stage", "dev", "fanout-on"])
    second = CliRunner().invoke(cli, ["--stage", "dev", "fanout-on"])

    # Then the consumer's event source reports partial batch failures ...
    assert first.exit_code == 0, first.output
    functions = boto3.client("lambda", region_name=REGION)
    (mapping,) = functions.list_event_source_mappings(
        FunctionName="loan-reminders-dev-deliver_fanout"
    )["EventSourceMappings"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # ... every scheduled function hands its overflow to the queue, the consumer is paced,
    # and each keeps the variables Chalice gave it
    for name in registry.NAMES:
        config = functions.get_function_configuration(
            FunctionName=f"loan-reminders-dev-check_{name}"
        )
        assert config["Environment"]["Variables"] == {
            "SENDER_EMAIL": "reminders@lender.example.com.au",
            "FANOUT_QUEUE_URL": url,
        }
    consumer = functions.get_function_configuration(
        FunctionName="loan-reminders-dev-deliver_fanout"
    )
    assert consumer["Environment"]["Variables"]["FANOUT_CONSUMER_RATE"] == "8"
    # And the second call changed nothing
    assert first.output.count(": updated") == 5
    assert second.exit_code == 0
    assert second.output.count(": already set") == 5
    assert ": updated" not in second.output


def test_fanout_on_before_the_consumer_is_deployed_says_so(aws: None) -> None:
    # Given a stage whose consumer reads no event source yet
    _deployed_dev_stage(with_consumer=False)

    # When the fan-out is turned on
    result = CliRunner().invoke(cli, ["--stage", "dev", "fanout-on"])

    # Then it fails, naming the consumer and the queue, and changes no function
    assert result.exit_code == 1
    assert (
        "loan-reminders-dev-deliver_fanout reads no event source on loan-reminders-dev-fanout"
        in result.output
    )
    config = boto3.client("lambda", region_name=REGION).get_function_configuration(
        FunctionName="loan-reminders-dev-check_note_reminders"
    )
    assert "FANOUT_QUEUE_URL" not in config["Environment"]["Variables"]


def test_fanout_on_needs_a_stage(aws: None) -> None:
    result = CliRunner().invoke(cli, ["fanout-on"])

    assert result.exit_code == 2
    assert "fanout-on needs --stage" in result.output
