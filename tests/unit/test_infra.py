"""Deploy path and infrastructure as code: stages, policy files, the packaged template.

``make package`` runs once for this module (into a temporary directory): the
generated merge template, ``chalice package`` and cfn-lint, exactly as an operator
runs it. The tests then read the one SAM template it produced.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import boto3
import pytest
from chalice.utils import to_cfn_resource_name
from click.testing import CliRunner
from mypy_boto3_sesv2 import SESV2Client
from pynamodb.models import Model

from chalicelib import fanout, models, observability
from chalicelib.config import Settings, Tables, Thresholds
from chalicelib.registry import CHECKS
from ops import infra, stages
from ops.cli import cli
from ops.demo import LENDER_ENVIRONMENT
from ops.stages import StageError, stage_environment
from tests import factories as f
from tests.support import REGION, run, ses_error, ses_faults, sydney

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "prod")
TUNABLES = [name.upper() for name in Thresholds.__dataclass_fields__] + [
    "STALE_APPLICATIONS_START",
    "NOTE_REMINDERS_START",
    "REPAYMENT_REMINDERS_START",
    "BUSINESS_DAY_END",
]


def stage_config(stage: str) -> dict[str, Any]:
    """The stage's section of .chalice/config.json."""
    config: dict[str, Any] = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return dict(config["stages"][stage])


# --- stages and policy files ------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_writes_out_its_tables_sender_timezone_and_every_threshold(stage: str) -> None:
    env = stage_config(stage)["environment_variables"]

    settings = Settings.from_env({**env, "AWS_REGION": REGION})

    assert {getattr(settings.tables, t.name) for t in fields(Tables)} == {
        f"{stage}-{t.name}" for t in fields(Tables)
    }
    assert env["SENDER_EMAIL"] == settings.sender_email
    assert env["BUSINESS_TIMEZONE"] == "Australia/Sydney"
    assert [name for name in TUNABLES if name not in env] == []


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_uses_its_own_policy_file_instead_of_chalice_autogeneration(stage: str) -> None:
    config = stage_config(stage)

    assert config["autogen_policy"] is False
    assert config["iam_policy_file"] == f"policy-{stage}.json"
    assert (ROOT / ".chalice" / f"policy-{stage}.json").is_file()


def test_the_stages_send_from_different_addresses() -> None:
    senders = {stage_config(s)["environment_variables"]["SENDER_EMAIL"] for s in STAGES}

    assert len(senders) == len(STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_the_committed_policy_file_is_what_the_models_and_config_generate(stage: str) -> None:
    loaded = infra.load_stage(stage)

    committed = loaded.policy_file.read_text()

    assert committed == infra.render_json(infra.stage_policy(loaded)), (
        f"{loaded.policy_file.name} is out of date: run `make policy` and review the change"
    )


def test_every_model_has_a_table_setting() -> None:
    declared = {
        value
        for value in vars(models).values()
        if isinstance(value, type)
        and issubclass(value, Model)
        and value.__module__ == models.__name__
    }

    assert set(models.TABLE_FIELDS) == declared - {models.CrmModel}
    assert sorted(models.TABLE_FIELDS.values()) == sorted(t.name for t in fields(Tables))


@pytest.fixture
def config_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of .chalice/ that the policy command reads and writes instead of the real one."""
    copy = tmp_path / ".chalice"
    copy.mkdir()
    for name in (
        "config.json",
        "policy-dev.json",
        "policy-prod.json",
        "policy-dev-fanout.json",
        "policy-prod-fanout.json",
    ):
        shutil.copy(ROOT / ".chalice" / name, copy / name)
    monkeypatch.setattr(stages, "CHALICE_CONFIG", copy / "config.json")
    return copy


def test_policy_check_fails_on_a_stale_file_and_policy_rewrites_it(config_copy: Path) -> None:
    stale = config_copy / "policy-dev.json"
    stale.write_text('{"Version": "2012-10-17", "Statement": []}\n')
    runner = CliRunner()

    checked = runner.invoke(cli, ["policy", "--check"])
    unchanged = stale.read_text()
    written = runner.invoke(cli, ["policy"])
    rechecked = runner.invoke(cli, ["--stage", "dev", "policy", "--check"])

    assert checked.exit_code == 1
    assert "policy-dev.json: out of date" in checked.output
    assert "policy-prod.json: up to date" in checked.output
    assert "run `make policy`" in checked.output
    assert unchanged == '{"Version": "2012-10-17", "Statement": []}\n'
    assert written.exit_code == 0
    assert "policy-dev.json: written" in written.output
    assert stale.read_text() == (ROOT / ".chalice" / "policy-dev.json").read_text()
    assert rechecked.exit_code == 0, rechecked.output


def test_a_stage_with_a_broken_setting_is_reported_by_name(config_copy: Path) -> None:
    config = json.loads((config_copy / "config.json").read_text())
    config["stages"]["prod"]["environment_variables"]["STALE_AFTER_DAYS"] = "soon"
    (config_copy / "config.json").write_text(json.dumps(config))

    result = CliRunner().invoke(cli, ["policy", "--check"])

    assert result.exit_code == 1
    assert "stage prod: STALE_AFTER_DAYS must be a whole number of days" in result.output


def test_the_template_command_needs_a_stage(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["template", "--output", str(tmp_path / "t.json")])

    assert result.exit_code == 2
    assert "template needs --stage" in result.output
    assert not (tmp_path / "t.json").exists()


def test_the_template_command_writes_the_merge_template(tmp_path: Path) -> None:
    output = tmp_path / "out" / "merge.json"

    result = CliRunner().invoke(cli, ["--stage", "prod", "template", "--output", str(output)])

    assert result.exit_code == 0, result.output
    template = json.loads(output.read_text())
    assert template["Resources"]["NotificationsTable"]["Properties"]["TableName"] == (
        "prod-notifications"
    )


def test_an_unknown_stage_is_refused_by_the_generators() -> None:
    with pytest.raises(StageError, match="unknown stage 'staging'"):
        infra.load_stage("staging")


# --- tables from the models ---------------------------------------------------------------


def test_the_table_definitions_are_what_pynamodb_creates(tables: Settings) -> None:
    """``provision`` (Model.create_table) in moto versus the generated CloudFormation tables."""
    client = boto3.client("dynamodb", region_name=REGION)

    for model in models.ALL_MODELS:
        name = infra.table_name(tables, model)
        created = client.describe_table(TableName=name)["Table"]
        generated = infra.table_properties(model, name)

        assert generated["TableName"] == created["TableName"]
        assert generated["BillingMode"] == created["BillingModeSummary"]["BillingMode"]
        assert generated["KeySchema"] == created["KeySchema"]
        assert generated["AttributeDefinitions"] == sorted(
            created["AttributeDefinitions"], key=lambda a: a["AttributeName"]
        )
        assert generated.get("GlobalSecondaryIndexes", []) == sorted(
            (
                {k: index[k] for k in ("IndexName", "KeySchema", "Projection")}
                for index in created.get("GlobalSecondaryIndexes", [])
            ),
            key=lambda i: str(i["IndexName"]),
        )
        assert created.get("LocalSecondaryIndexes", []) == []


def test_a_table_the_template_cannot_express_is_refused() -> None:
    class Provisioned(Model):
        class Meta:
            table_name = "provisioned"
            billing_mode = "PROVISIONED"

    with pytest.raises(infra.InfraError, match="only PAY_PER_REQUEST"):
        infra.table_properties(Provisioned, "x")


# --- the packaged template ------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``make package STAGE=dev`` into a temporary directory: (its folder, make's output)."""
    out = tmp_path_factory.mktemp("package") / "dev"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    result = subprocess.run(  # noqa: S603 (fixed arguments)
        [  # noqa: S607 (make from the PATH, as an operator runs it)
            "make",
            "--no-print-directory",
            "-o",
            "install",  # the running interpreter's environment is the installed one
            "package",
            "STAGE=dev",
            f"PACKAGE_DIR={out}",
            f"BIN={Path(sys.executable).parent}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result.stdout + result.stderr


@pytest.fixture(scope="module")
def template(package: tuple[Path, str]) -> dict[str, Any]:
    """The packaged SAM template."""
    loaded: dict[str, Any] = json.loads((package[0] / "sam.json").read_text())
    return loaded


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    """The template's resources of one type, by logical id."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def triggered_functions(template: dict[str, Any], *kinds: str) -> list[str]:
    """Logical ids of the functions triggered by an event source of one of ``kinds``."""
    return sorted(
        name
        for name, fn in resources_of_type(template, "AWS::Serverless::Function").items()
        if any(e["Type"] in kinds for e in fn["Properties"].get("Events", {}).values())
    )


def scheduled_functions(template: dict[str, Any]) -> list[str]:
    """Logical ids of the functions an EventBridge schedule triggers."""
    return triggered_functions(template, "Schedule")


def eventbridge_functions(template: dict[str, Any]) -> list[str]:
    """Logical ids of the functions EventBridge invokes (asynchronously): schedules and rules."""
    return triggered_functions(template, "Schedule", "CloudWatchEvent")


def test_make_package_yields_one_template_that_cfn_lint_accepts(
    package: tuple[Path, str],
) -> None:
    folder, output = package

    assert sorted(p.name for p in folder.iterdir()) == ["deployment.zip", "sam.json"]
    assert "cfn-lint" in output
    assert f"{folder}/sam.json: valid (cfn-lint)" in output


def test_cfn_lint_rejects_the_template_without_its_dead_letter_queue(
    package: tuple[Path, str], template: dict[str, Any], tmp_path: Path
) -> None:
    """The lint in `make package` is not a formality: a dangling reference fails it."""
    broken = json.loads(json.dumps(template))
    del broken["Resources"]["DeadLetterQueue"]
    (tmp_path / "sam.json").write_text(json.dumps(broken))

    result = subprocess.run(  # noqa: S603 (fixed arguments)
        [str(Path(sys.executable).parent / "cfn-lint"), str(tmp_path / "sam.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    assert "DeadLetterQueue" in result.stdout


def test_the_template_has_the_app_functions_and_the_chalice_schedules(
    template: dict[str, Any],
) -> None:
    functions = resources_of_type(template, "AWS::Serverless::Function")

    assert scheduled_functions(template) == [
        "CheckNoteReminders",
        "CheckRepaymentReminders",
        "CheckStaleApplications",
    ]
    assert {fn["Properties"]["FunctionName"] for fn in functions.values()} == {
        f"loan-reminders-dev-{f.name}" for f in infra.app_functions(infra.load_app())
    }
    assert template["Transform"] == "AWS::Serverless-2016-10-31"


def test_the_template_declares_the_six_tables_as_the_models_define_them(
    template: dict[str, Any],
) -> None:
    dev = infra.load_stage("dev").settings
    tables = resources_of_type(template, "AWS::DynamoDB::Table")

    assert {t["Properties"]["TableName"] for t in tables.values()} == {
        f"dev-{t.name}" for t in fields(Tables)
    }
    for model in models.ALL_MODELS:
        table = tables[infra.table_logical_id(model)]
        assert table["Properties"] == infra.table_properties(model, infra.table_name(dev, model))
        assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
    notifications = tables["NotificationsTable"]["Properties"]
    assert {i["IndexName"] for i in notifications["GlobalSecondaryIndexes"]} >= {
        "item_id-index",
        "recipient_email-index",
    }


def test_every_eventbridge_function_retries_then_sends_the_event_to_the_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    configs = resources_of_type(template, "AWS::Lambda::EventInvokeConfig")

    assert sorted(c["Properties"]["FunctionName"]["Ref"] for c in configs.values()) == (
        eventbridge_functions(template)
    )
    assert "RecordSesEvents" in eventbridge_functions(template)
    for config in configs.values():
        properties = config["Properties"]
        assert properties["MaximumRetryAttempts"] == 2
        assert properties["MaximumEventAgeInSeconds"] == 3600
        assert properties["Qualifier"] == "$LATEST"
        assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": ["DeadLetterQueue", "Arn"]
        }
    queue = template["Resources"]["DeadLetterQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600


def from_stack(value: Any) -> Any:
    """A stack policy read back as a policy file: Fn::Sub undone, the stack's tokens mapped."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return (
            value["Fn::Sub"]
            .replace("${AWS::AccountId}", "${aws:PrincipalAccount}")
            .replace("${AWS::Region}", REGION)
        )
    if isinstance(value, list):
        return [from_stack(v) for v in value]
    if isinstance(value, dict):
        return {k: from_stack(v) for k, v in value.items()}
    return value


def test_every_function_role_has_exactly_the_stage_policy_file(template: dict[str, Any]) -> None:
    committed = json.loads((ROOT / ".chalice" / "policy-dev.json").read_text())
    consumer = json.loads((ROOT / ".chalice" / "policy-dev-fanout.json").read_text())
    roles = resources_of_type(template, "AWS::IAM::Role")
    functions = resources_of_type(template, "AWS::Serverless::Function")

    assert {fn["Properties"]["Role"]["Fn::GetAtt"][0] for fn in functions.values()} == set(roles)
    for name, role in roles.items():
        [policy] = role["Properties"]["Policies"]
        expected = consumer if name == "DeliverFanoutRole" else committed
        assert from_stack(policy["PolicyDocument"]) == expected
        assert "ManagedPolicyArns" not in role["Properties"]


def test_only_the_eventbridge_functions_roles_may_send_to_the_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    [(name, policy)] = resources_of_type(template, "AWS::IAM::Policy").items()
    functions = template["Resources"]

    assert name == "DeadLetterQueueSendPolicy"
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}],
        }
    ]
    assert sorted(r["Ref"] for r in policy["Properties"]["Roles"]) == sorted(
        functions[f]["Properties"]["Role"]["Fn::GetAtt"][0] for f in eventbridge_functions(template)
    )


def alarms(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The properties of every CloudWatch alarm."""
    return [a["Properties"] for a in resources_of_type(template, "AWS::CloudWatch::Alarm").values()]


def test_an_alarm_watches_the_errors_of_every_function(template: dict[str, Any]) -> None:
    watched = sorted(
        a["Dimensions"][0]["Value"]["Ref"]
        for a in alarms(template)
        if (a["Namespace"], a["MetricName"]) == ("AWS/Lambda", "Errors")
    )

    assert watched == sorted(resources_of_type(template, "AWS::Serverless::Function"))


def test_an_alarm_watches_the_depth_of_the_dead_letter_queue(template: dict[str, Any]) -> None:
    depth = template["Resources"]["DeadLetterQueueDepthAlarm"]["Properties"]

    assert depth["Namespace"] == "AWS/SQS"
    assert depth["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert depth["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
    ]
    assert depth["Threshold"] == 1
    assert depth["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_every_alarm_notifies_the_alarm_topic(template: dict[str, Any]) -> None:
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms(template))
    assert template["Resources"]["AlarmEmailSubscription"]["Condition"] == "HasAlarmEmail"


def emf_documents(text: str) -> list[dict[str, Any]]:
    """The CloudWatch Embedded Metric Format documents printed on stdout."""
    documents = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            documents.append(json.loads(line))
    return documents


def test_the_failed_notices_alarms_watch_the_metric_a_rejected_notice_emits(
    template: dict[str, Any],
    service: Settings,
    ses: SESV2Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A permanent SES rejection emits NoticesFailed exactly as the alarm of its check expects."""
    # The function runs with its stage's service name, as the deployed one does.
    stage_service = stage_environment("dev")["POWERTOOLS_SERVICE_NAME"]
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", stage_service)
    f.crm()
    f.application()
    f.note(remind_date="2026-11-23")
    capsys.readouterr()
    with ses_faults(ses, lambda _: ses_error("MessageRejected")):
        run("note_reminders", sydney("2026-11-23 12:00"), ses)
    emitted = set()
    for document in emf_documents(capsys.readouterr().out):
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = document.get("NoticesFailed", 0)
                failed = sum(value) if isinstance(value, list) else value
                if metric["Name"] == "NoticesFailed" and failed >= 1:
                    for dimension_set in directive["Dimensions"]:
                        emitted.add(
                            (
                                directive["Namespace"],
                                tuple(sorted((d, document[d]) for d in dimension_set)),
                            )
                        )
    watched = {
        a["Dimensions"][0]["Value"]: (
            a["Namespace"],
            tuple(sorted((d["Name"], d["Value"]) for d in a["Dimensions"])),
        )
        for a in alarms(template)
        if a["MetricName"] == "NoticesFailed"
    }

    assert sorted(watched) == sorted(CHECKS)
    assert watched["note_reminders"] in emitted, emitted
    assert ("service", stage_service) in watched["note_reminders"][1]


# --- SES events ------------------------------------------------------------------------------


def test_each_stage_sends_through_its_own_ses_configuration_set() -> None:
    sets = {s: stage_config(s)["environment_variables"]["SES_CONFIGURATION_SET"] for s in STAGES}

    assert sets == {"dev": "loan-reminders-dev", "prod": "loan-reminders-prod"}


def test_the_template_creates_the_configuration_set_publishing_to_eventbridge(
    template: dict[str, Any],
) -> None:
    [(name, config_set)] = resources_of_type(template, "AWS::SES::ConfigurationSet").items()
    [destination] = resources_of_type(
        template, "AWS::SES::ConfigurationSetEventDestination"
    ).values()

    assert config_set["Properties"] == {
        "Name": "loan-reminders-dev",
        "SuppressionOptions": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
    }
    properties = destination["Properties"]
    assert properties["ConfigurationSetName"] == {"Ref": name}
    assert properties["EventDestination"]["Enabled"] is True
    assert sorted(properties["EventDestination"]["MatchingEventTypes"]) == sorted(
        ["send", "delivery", "bounce", "complaint", "reject", "deliveryDelay"]
    )
    assert properties["EventDestination"]["EventBridgeDestination"]["EventBusArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default"
    }
    assert template["Outputs"]["ConfigurationSetName"] == {"Value": {"Ref": name}}


def test_the_ses_events_rule_matches_the_six_events_of_the_stages_configuration_set_only(
    template: dict[str, Any],
) -> None:
    function = template["Resources"]["RecordSesEvents"]["Properties"]
    [rule] = function["Events"].values()

    assert function["FunctionName"] == "loan-reminders-dev-record_ses_events"
    assert rule["Type"] == "CloudWatchEvent"
    assert rule["Properties"]["Pattern"] == {
        "source": ["aws.ses"],
        "detail-type": [
            "Email Sent",
            "Email Delivered",
            "Email Bounced",
            "Email Complaint Received",
            "Email Rejected",
            "Email Delivery Delayed",
        ],
        "detail": {"mail": {"tags": {"ses:configuration-set": ["loan-reminders-dev"]}}},
    }


def test_alarms_watch_the_bounces_and_complaints_of_every_check(template: dict[str, Any]) -> None:
    watched = sorted(
        (a["MetricName"], a["Dimensions"][0]["Value"], a["Dimensions"][1]["Value"])
        for a in alarms(template)
        if a["MetricName"] in ("NoticesBounced", "NoticesComplained")
    )

    assert watched == sorted(
        (metric, check, "loan-reminders-dev")
        for metric in ("NoticesBounced", "NoticesComplained")
        for check in CHECKS
    )


def test_a_stage_without_a_configuration_set_gets_no_ses_event_resources_or_grants() -> None:
    stage = infra.load_stage("dev")
    settings = Settings.from_env(
        {
            **{f"{t.name.upper()}_TABLE": f"x-{t.name}" for t in fields(Tables)},
            "SENDER_EMAIL": "a@example.com",
            **LENDER_ENVIRONMENT,
            "AWS_REGION": REGION,
        }
    )
    bare = infra.Stage(
        name="bare",
        app_name=stage.app_name,
        settings=settings,
        service="bare",
        policy_file=stage.policy_file,
        autogen_policy=False,
        consumer_policy_file=stage.consumer_policy_file,
    )

    template = infra.merge_template(bare, infra.app_functions(infra.load_app()))
    policy = json.dumps(infra.policy_document(settings, "bare-"))

    assert not [r for r in template["Resources"].values() if "SES" in r.get("Type", "")]
    assert "ConfigurationSetName" not in template["Outputs"]
    assert "send_token-index" not in policy
    assert "configuration-set" not in policy
    assert "PutSuppressedDestination" not in policy


# --- fan-out ------------------------------------------------------------------------------


def test_the_fanout_queue_redrives_poison_messages_to_its_own_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    queue = resources["FanoutQueue"]["Properties"]
    dead = resources["FanoutDeadLetterQueue"]["Properties"]

    assert queue["QueueName"] == "loan-reminders-dev-fanout"
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["FanoutDeadLetterQueue", "Arn"]},
        "maxReceiveCount": infra.FANOUT_MAX_RECEIVES,
    }
    # A record is not handed out again while a consumer may still hold it
    consumer = resources["DeliverFanout"]
    assert queue["VisibilityTimeout"] >= 6 * consumer["Properties"]["Timeout"]
    # Messages outlive the consumer's maximum age: it drops them, SQS does not lose them
    assert queue["MessageRetentionPeriod"] > fanout.MAX_AGE_MINUTES * 60
    assert dead["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_the_consumer_reads_the_stage_queue_with_partial_batch_responses(
    template: dict[str, Any],
) -> None:
    consumer = template["Resources"]["DeliverFanout"]
    [source] = consumer["Properties"]["Events"].values()

    assert triggered_functions(template, "SQS") == ["DeliverFanout"]
    assert source["Properties"]["Queue"] == {
        "Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
        "loan-reminders-dev-fanout"
    }
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert source["Properties"]["BatchSize"] == fanout.BATCH_SIZE
    assert source["Properties"]["ScalingConfig"] == {"MaximumConcurrency": fanout.MAX_CONCURRENCY}
    assert consumer["DependsOn"] == ["FanoutQueue"]
    # Paced so that every consumer at once stays within a 200/s quota
    rate = float(consumer["Properties"]["Environment"]["Variables"]["FANOUT_CONSUMER_RATE"])
    assert rate * source["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= 200


def test_only_the_scheduled_functions_get_the_queue_and_only_the_consumer_receives(
    template: dict[str, Any],
) -> None:
    functions = resources_of_type(template, "AWS::Serverless::Function")
    roles = resources_of_type(template, "AWS::IAM::Role")

    with_queue = sorted(
        name
        for name, fn in functions.items()
        if "FANOUT_QUEUE_URL" in fn["Properties"]["Environment"]["Variables"]
    )
    assert with_queue == scheduled_functions(template)
    for name in with_queue:
        variables = functions[name]["Properties"]["Environment"]["Variables"]
        assert variables["FANOUT_QUEUE_URL"] == {"Ref": "FanoutQueue"}
    receiving = sorted(
        name for name, role in roles.items() if "sqs:ReceiveMessage" in json.dumps(role)
    )
    assert receiving == ["DeliverFanoutRole"]


@pytest.mark.parametrize("stage", STAGES)
def test_the_consumer_policy_file_is_the_stage_policy_and_receiving_from_its_queue(
    stage: str,
) -> None:
    loaded = infra.load_stage(stage)
    consumer = json.loads(loaded.consumer_policy_file.read_text())
    committed = json.loads(loaded.policy_file.read_text())

    *shared, receive = consumer["Statement"]
    assert shared == committed["Statement"]
    assert receive == {
        "Sid": "ReceiveFromTheFanOutQueue",
        "Effect": "Allow",
        "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
        "Resource": [
            f"arn:aws:sqs:ap-southeast-2:${{aws:PrincipalAccount}}:loan-reminders-{stage}-fanout"
        ],
    }
    assert stage_config(stage)["lambda_functions"]["deliver_fanout"] == {
        "iam_policy_file": f"policy-{stage}-fanout.json"
    }
    assert loaded.consumer_policy_file.read_text() == infra.render_json(
        infra.consumer_policy(loaded)
    )


def test_the_stage_policy_lets_a_run_send_to_its_fanout_queue_only() -> None:
    dev = infra.load_stage("dev")
    [statement] = [
        s for s in infra.stage_policy(dev)["Statement"] if s["Sid"] == "HandNoticesToTheFanOutQueue"
    ]

    assert statement["Action"] == ["sqs:SendMessage"]
    assert statement["Resource"] == [
        "arn:aws:sqs:ap-southeast-2:${aws:PrincipalAccount}:loan-reminders-dev-fanout"
    ]


def test_alarms_watch_the_fanout_dead_letter_queue_and_the_oldest_message(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    depth = resources["FanoutDeadLetterQueueDepthAlarm"]["Properties"]
    age = resources["FanoutOldestMessageAlarm"]["Properties"]

    assert (depth["MetricName"], depth["Threshold"]) == ("ApproximateNumberOfMessagesVisible", 1)
    assert depth["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FanoutDeadLetterQueue", "QueueName"]}
    assert age["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert age["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FanoutQueue", "QueueName"]}
    assert 0 < age["Threshold"] < fanout.MAX_AGE_MINUTES * 60
    assert template["Outputs"]["FanoutQueueUrl"] == {"Value": {"Ref": "FanoutQueue"}}


# --- the dashboard ---------------------------------------------------------------------------

# What the dashboard shows of each check: chalicelib.observability's names, as runs emit them.
DASHBOARD_METRICS = {
    observability.NOTICES_SENT,
    observability.NOTICES_FAILED,
    observability.NOTICES_DEFERRED,
    observability.ITEMS_INVALID,
    observability.RUN_DURATION,
}


def dashboard_widgets(template: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The dashboard's widgets and the alarm ARNs its body is substituted with."""
    body, values = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets: list[dict[str, Any]] = json.loads(body)["widgets"]
    return widgets, values


def test_the_dashboard_shows_each_checks_metrics_beside_its_alarms(
    template: dict[str, Any],
) -> None:
    # Given the packaged template's dashboard
    widgets, values = dashboard_widgets(template)
    resources = template["Resources"]
    every_alarm = set(resources_of_type(template, "AWS::CloudWatch::Alarm"))
    check_of_function = {to_cfn_resource_name(f"check_{check}"): check for check in CHECKS}

    # Then every alarm of the stack is on it, by the ARN of the alarm resource
    placed = [a for w in widgets if w["type"] == "alarm" for a in w["properties"]["alarms"]]
    assert sorted(placed) == sorted(f"${{{name}}}" for name in every_alarm)
    assert values == {name: {"Fn::GetAtt": [name, "Arn"]} for name in every_alarm}

    # And each check has its five metrics, with the dimensions a run emits, beside its alarms
    for check in CHECKS:
        mine = [w for w in widgets if w["properties"]["title"].startswith(f"{check}:")]
        shown = {
            (m[0], m[1], tuple(m[2:6]))
            for w in mine
            if w["type"] == "metric"
            for m in w["properties"]["metrics"]
        }
        assert shown == {
            (observability.NAMESPACE, name, ("check", check, "service", "loan-reminders-dev"))
            for name in DASHBOARD_METRICS
        }
        (alarm_widget,) = [w for w in mine if w["type"] == "alarm"]
        watched = set()
        for ref in alarm_widget["properties"]["alarms"]:
            alarm = resources[ref.strip("${}")]["Properties"]
            dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
            if "FunctionName" in dimensions:
                assert check_of_function[dimensions["FunctionName"]["Ref"]] == check
            else:
                assert dimensions["check"] == check
            watched.add(alarm["MetricName"])
        assert watched == {"Errors", "NoticesFailed", "NoticesBounced", "NoticesComplained"}


def test_the_dashboard_charts_the_metrics_a_run_emits(
    template: dict[str, Any],
    service: Settings,
    ses: SESV2Client,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the note check runs under its stage's service name, as deployed
    monkeypatch.setenv(
        "POWERTOOLS_SERVICE_NAME", stage_environment("dev")["POWERTOOLS_SERVICE_NAME"]
    )
    f.crm()
    f.application()
    f.note(remind_date="2026-11-23")
    capsys.readouterr()

    # When it runs
    run("note_reminders", sydney("2026-11-23 12:00"), ses)

    # Then every metric the dashboard shows for it is one the run emitted, with its dimensions
    emitted = set()
    for document in emf_documents(capsys.readouterr().out):
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = tuple(sorted((d, document[d]) for d in dimension_set))
                emitted |= {(directive["Namespace"], m["Name"], dims) for m in directive["Metrics"]}
    widgets, _ = dashboard_widgets(template)
    shown = {
        (m[0], m[1], tuple(sorted(zip(m[2:6:2], m[3:6:2], strict=True))))
        for w in widgets
        if w["type"] == "metric" and w["properties"]["title"].startswith("note_reminders:")
        for m in w["properties"]["metrics"]
    }
    assert len(shown) == len(DASHBOARD_METRICS)
    assert shown <= emitted, shown - emitted
