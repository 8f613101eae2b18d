"""Infrastructure generated from the code: IAM policies and the CloudFormation additions.

Two things are derived here from the same sources of truth, the PynamoDB models
(tables, keys, indexes) and ``.chalice/config.json`` (stages, table names, sender):

* each stage's least-privilege IAM policy, written to ``.chalice/policy-<stage>.json``
  (``python -m ops.cli policy``), which Chalice attaches to every function
  because the stage sets ``autogen_policy: false``;
* the template that ``chalice package --merge-template`` merges into its SAM output
  (``python -m ops.cli --stage STAGE template``): the six DynamoDB tables, an
  ``AWS::Lambda::EventInvokeConfig`` per EventBridge-triggered function (retries,
  maximum event age, failures to an SQS dead-letter queue), the SES configuration set
  that publishes its events to EventBridge, and the CloudWatch alarms.

Chalice names a function's SAM resource after it (``check_stale_applications`` ->
``CheckStaleApplications``) and, with ``autogen_policy`` off, gives every function
its own role (``CheckStaleApplicationsRole``) carrying the stage's policy file.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from chalice.app import Chalice, CloudWatchEventConfig, SQSEventConfig
from chalice.utils import to_cfn_resource_name
from pynamodb.constants import PAY_PER_REQUEST_BILLING_MODE
from pynamodb.indexes import Index
from pynamodb.models import Model

from chalicelib import fanout, models
from chalicelib import observability as metric
from chalicelib.config import Settings
from chalicelib.registry import CHECKS
from chalicelib.runner import SCHEDULED_PREFIX
from ops.stages import PROJECT_DIR, REGION, read_config, stage_environment

# An IAM policy variable: the account of the role using the policy, so the policy
# files name no account and still grant nothing in any other account.
ACCOUNT = "${aws:PrincipalAccount}"

# SES events (chalicelib.ses_events) that mean the CRM's address needs a person.
ADDRESS_METRICS = {
    metric.NOTICES_BOUNCED: "hard-bounced (the address is now suppressed: correct it in the CRM)",
    metric.NOTICES_COMPLAINED: (
        "was marked as spam by its recipient (the address is now suppressed)"
    ),
}
# What the configuration set publishes to EventBridge (SES's MatchingEventTypes).
SES_EVENT_TYPES = ("send", "delivery", "bounce", "complaint", "reject", "deliveryDelay")
# The function app.py declares for them (its rule is narrowed to the stage's set here).
SES_EVENTS_FUNCTION = "record_ses_events"
# The fan-out queue's consumer in app.py.
FANOUT_FUNCTION = "deliver_fanout"
# Lambda retries a failed scheduled run twice (about 1 and 3 minutes later); an event
# older than an hour is dropped to the dead-letter queue: the next hourly run has
# taken over by then (the ledger makes an overlap harmless).
MAX_RETRY_ATTEMPTS = 2
MAX_EVENT_AGE_SECONDS = 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
ALARM_PERIOD_SECONDS = 300
# The dashboard's per-check metrics (chalicelib.observability's names, as a run emits
# them): counts summed per hour, as the checks run hourly, and the run's duration.
DASHBOARD_COUNTS: tuple[tuple[str, str], ...] = (
    (metric.NOTICES_SENT, "sent"),
    (metric.NOTICES_FAILED, "failed"),
    (metric.NOTICES_DEFERRED, "deferred"),
    (metric.ITEMS_INVALID, "invalid"),
)
DASHBOARD_PERIOD_SECONDS = 3600
# The fan-out consumer's timeout; the queue's visibility timeout is six times it (as
# Lambda recommends), so a record is not handed out again while a consumer still has it.
FANOUT_TIMEOUT_SECONDS = 120
FANOUT_VISIBILITY_SECONDS = 6 * FANOUT_TIMEOUT_SECONDS
# A record that failed this many receives (a poison message) goes to the queue's own DLQ.
FANOUT_MAX_RECEIVES = 5
# Longer than the consumer's maximum age (it drops older messages), so none is lost unseen.
FANOUT_RETENTION_SECONDS = 4 * 3600
# The oldest message's age that alarms: half the consumer's maximum age, so an operator
# hears of a stuck or too-slow consumer before it starts dropping messages.
FANOUT_AGE_ALARM_SECONDS = fanout.MAX_AGE_MINUTES * 60 // 2


@dataclass(frozen=True)
class Access:
    """DynamoDB actions the Lambda code performs on one table, or on one of its indexes."""

    model: type[Model]
    actions: tuple[str, ...]
    index: Index[Any] | None = None


# Everything a running check does in DynamoDB (tests/test_iam.py records the
# operations of the whole suite and fails on one not granted here, or granted and
# never used). Related items are fetched with BatchGetItem; the due items are read
# from the indexes with Query (the CRM's, and the service's own schedule in the ledger
# table); the ledger, the schedule, the repayment flags and the notes' and repayments'
# pending marks use UpdateItem.
LAMBDA_ACCESS: tuple[Access, ...] = (
    Access(models.Application, ("dynamodb:Query",), models.Application.by_stage),
    Access(models.Note, ("dynamodb:Query",), models.Note.by_pending),
    Access(models.Repayment, ("dynamodb:Query",), models.Repayment.by_pending),
    Access(models.Notification, ("dynamodb:Query",), models.Notification.by_due),
    Access(models.Application, ("dynamodb:BatchGetItem",)),
    Access(models.Staff, ("dynamodb:BatchGetItem",)),
    Access(models.Borrower, ("dynamodb:BatchGetItem",)),
    Access(models.Notification, ("dynamodb:BatchGetItem", "dynamodb:UpdateItem")),
    Access(models.Note, ("dynamodb:UpdateItem",)),
    Access(models.Repayment, ("dynamodb:UpdateItem",)),
)
# What recording SES events adds (a stage with a configuration set): finding a
# message's entries by its send token. Its writes are LAMBDA_ACCESS's UpdateItem on
# the ledger, and suppression lookups its BatchGetItem.
EVENT_ACCESS: tuple[Access, ...] = (
    Access(models.Notification, ("dynamodb:Query",), models.Notification.by_send_token),
)
SES_ACTIONS = ("ses:SendEmail", "ses:SendRawEmail")
# SES grants PutSuppressedDestination on no resource type but "*" (an account-level list).
SUPPRESS_ACTIONS = ("ses:PutSuppressedDestination",)
# SES grants GetAccount (a run reads its send quota) on no resource type but "*" either.
QUOTA_ACTIONS = ("ses:GetAccount",)
LOG_ACTIONS = ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents")
# A run short of time hands notices to the fan-out queue (SendMessageBatch is authorized
# as SendMessage); chalicelib.fanout makes no other SQS call.
FANOUT_ACTIONS = ("sqs:SendMessage",)
# What Lambda's poller does with the consumer's role (the code never calls these).
FANOUT_CONSUME_ACTIONS = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")


@dataclass(frozen=True)
class Stage:
    """One stage of ``.chalice/config.json`` as the generators need it."""

    name: str
    app_name: str
    settings: Settings
    service: str
    policy_file: Path
    autogen_policy: bool
    # The fan-out consumer's own policy file: the stage's, plus receiving from its queue.
    consumer_policy_file: Path

    @property
    def function_prefix(self) -> str:
        """Chalice names a stage's functions ``<app>-<stage>-<function>``."""
        return f"{self.app_name}-{self.name}-"


@dataclass(frozen=True)
class Function:
    """A Lambda function of the Chalice app: scheduled, on an event pattern, or plain."""

    name: str
    scheduled: bool
    on_event: bool = False
    # Invoked by Lambda's poller of the fan-out queue (chalicelib.fanout's consumer).
    on_queue: bool = False

    @property
    def asynchronous(self) -> bool:
        """Invoked by EventBridge (a schedule or an event pattern): retried, then dead-lettered."""
        return self.scheduled or self.on_event

    @property
    def logical_id(self) -> str:
        """The function's resource name in Chalice's SAM template."""
        return to_cfn_resource_name(self.name)

    def role_id(self, stage: Stage) -> str:
        """The resource name of the function's role in Chalice's SAM template."""
        return "DefaultRole" if stage.autogen_policy else to_cfn_resource_name(f"{self.name}_role")


class InfraError(ValueError):
    """The configuration cannot produce a policy or template (the message says why)."""


def load_stage(name: str, config: Path | None = None, region: str = REGION) -> Stage:
    """Read stage ``name``: its settings as its functions would, its policy file and flags."""
    config, data = read_config(config)
    env = stage_environment(name, config)
    stage = data["stages"][name]
    env["AWS_REGION"] = region
    env.pop("DYNAMODB_ENDPOINT_URL", None)
    policy_name = stage.get("iam_policy_file", data.get("iam_policy_file", f"policy-{name}.json"))
    consumer = stage.get("lambda_functions", {}).get(FANOUT_FUNCTION, {})
    consumer_policy = consumer.get("iam_policy_file", f"policy-{name}-fanout.json")
    return Stage(
        name=name,
        app_name=str(data["app_name"]),
        settings=Settings.from_env(env),
        service=env.get("POWERTOOLS_SERVICE_NAME", data["app_name"]),
        policy_file=config.parent / str(policy_name),
        autogen_policy=bool(stage.get("autogen_policy", data.get("autogen_policy", True))),
        consumer_policy_file=config.parent / str(consumer_policy),
    )


# --- IAM -----------------------------------------------------------------------------


def table_name(settings: Settings, model: type[Model]) -> str:
    """The stage's name for ``model``'s table."""
    return str(getattr(settings.tables, models.TABLE_FIELDS[model]))


@dataclass(frozen=True)
class Arns:
    """Builds the ARNs of a stage's resources in one account and region."""

    settings: Settings
    account: str = ACCOUNT
    region: str | None = None

    def _base(self, service: str) -> str:
        return f"arn:aws:{service}:{self.region or self.settings.region}:{self.account}:"

    def table(self, model: type[Model]) -> str:
        """The ARN of ``model``'s table."""
        return f"{self._base('dynamodb')}table/{table_name(self.settings, model)}"

    def index(self, model: type[Model], index: Index[Any]) -> str:
        """The ARN of one of ``model``'s indexes."""
        return f"{self.table(model)}/index/{index.Meta.index_name}"

    def sender_identities(self) -> list[str]:
        """The SES identities a send from the sender is authorized on: its address or domain."""
        address = sender_address(self.settings)
        return [
            f"{self._base('ses')}identity/{address}",
            f"{self._base('ses')}identity/{address.rpartition('@')[2]}",
        ]

    def configuration_set(self) -> str:
        """The ARN of the stage's SES configuration set (sending through it is authorized on it)."""
        return f"{self._base('ses')}configuration-set/{self.settings.ses_configuration_set}"

    def fanout_queue(self, function_prefix: str) -> str:
        """The ARN of the stage's fan-out queue, ``<prefix>fanout``."""
        return f"{self._base('sqs')}{fanout_queue_name(function_prefix)}"

    def log_groups(self, function_prefix: str) -> str:
        """Every log group (and stream) of the stage's functions: ``/aws/lambda/<prefix>*``."""
        return f"{self._base('logs')}log-group:/aws/lambda/{function_prefix}*"


def fanout_queue_name(function_prefix: str) -> str:
    """The stage's fan-out queue: ``loan-reminders-<stage>-fanout``."""
    return f"{function_prefix}fanout"


def sender_address(settings: Settings) -> str:
    """The bare address of the configured sender (``Name <a@b>`` -> ``a@b``)."""
    return parseaddr(settings.sender_email)[1] or settings.sender_email


def policy_document(
    settings: Settings, function_prefix: str, arns: Arns | None = None
) -> dict[str, Any]:
    """The least-privilege policy of the stage's functions.

    DynamoDB: exactly :data:`LAMBDA_ACCESS` on the stage's tables and indexes. SES:
    sending, only on the sender's identity and only with the sender as From address,
    and reading the account's send quota (``GetAccount``, which paces a run). Logs:
    the functions' own log groups. With an SES configuration set, also sending through
    it, :data:`EVENT_ACCESS` and putting addresses on the suppression list (what
    recording SES events needs). ``arns`` defaults to the stage's region and the
    account of whoever uses the policy.
    """
    arns = arns or Arns(settings)
    events = settings.ses_configuration_set is not None
    statements = _dynamodb_statements(arns, LAMBDA_ACCESS + (EVENT_ACCESS if events else ()))
    statements.append(_send_statement(settings, arns, events))
    statements.append(_log_statement(arns, function_prefix))
    if events:
        statements.append(_suppress_statement())
    statements.append(_fanout_statement(arns, function_prefix))
    statements.append(_quota_statement())
    return {"Version": "2012-10-17", "Statement": statements}


def _dynamodb_statements(arns: Arns, accesses: Sequence[Access]) -> list[dict[str, Any]]:
    """One statement per DynamoDB action, on every table and index it is performed on."""
    grants: dict[str, list[str]] = {}
    for access in accesses:
        arn = (
            arns.table(access.model)
            if access.index is None
            else arns.index(access.model, access.index)
        )
        for action in access.actions:
            grants.setdefault(action, [])
            if arn not in grants[action]:
                grants[action].append(arn)
    return [
        {
            "Sid": "DynamoDB" + action.partition(":")[2],
            "Effect": "Allow",
            "Action": [action],
            "Resource": sorted(resources),
        }
        for action, resources in sorted(grants.items())
    ]


def _send_statement(settings: Settings, arns: Arns, events: bool) -> dict[str, Any]:
    """Sending as the stage's sender: on its identity and (with events) configuration set."""
    return {
        "Sid": "SendFromTheStageSender",
        "Effect": "Allow",
        "Action": list(SES_ACTIONS),
        "Resource": arns.sender_identities() + ([arns.configuration_set()] if events else []),
        "Condition": {"StringEquals": {"ses:FromAddress": sender_address(settings)}},
    }


def _fanout_statement(arns: Arns, function_prefix: str) -> dict[str, Any]:
    """Handing notices to the stage's fan-out queue, and to no other queue."""
    return {
        "Sid": "HandNoticesToTheFanOutQueue",
        "Effect": "Allow",
        "Action": list(FANOUT_ACTIONS),
        "Resource": [arns.fanout_queue(function_prefix)],
    }


def _log_statement(arns: Arns, function_prefix: str) -> dict[str, Any]:
    """Writing to the stage's functions' own log groups."""
    return {
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": list(LOG_ACTIONS),
        "Resource": [arns.log_groups(function_prefix)],
    }


def _suppress_statement() -> dict[str, Any]:
    """Putting addresses on the account's suppression list (SES has no resource type for it)."""
    return {
        "Sid": "SuppressBouncedAndComplainedAddresses",
        "Effect": "Allow",
        "Action": list(SUPPRESS_ACTIONS),
        "Resource": ["*"],
    }


def _quota_statement() -> dict[str, Any]:
    """Reading the account's send quota, which paces a run (SES has no resource type for it)."""
    return {
        "Sid": "ReadTheSendQuota",
        "Effect": "Allow",
        "Action": list(QUOTA_ACTIONS),
        "Resource": ["*"],
    }


def stage_policy(stage: Stage) -> dict[str, Any]:
    """The policy document of ``stage`` (what its policy file must contain)."""
    return policy_document(stage.settings, stage.function_prefix)


def consumer_policy(stage: Stage, arns: Arns | None = None) -> dict[str, Any]:
    """The fan-out consumer's policy: the stage's, and what Lambda's poller needs of its queue."""
    arns = arns or Arns(stage.settings)
    document = policy_document(stage.settings, stage.function_prefix, arns)
    document["Statement"].append(
        {
            "Sid": "ReceiveFromTheFanOutQueue",
            "Effect": "Allow",
            "Action": list(FANOUT_CONSUME_ACTIONS),
            "Resource": [arns.fanout_queue(stage.function_prefix)],
        }
    )
    return document


def stack_policy(stage: Stage) -> dict[str, Any]:
    """The stage's policy for its CloudFormation stack: the stack's own account and region.

    The same statements as the policy file, with ``Fn::Sub`` ARNs: cfn-lint (rightly
    for templates) accepts only a 12-digit account, ``*`` or a pseudo parameter there.
    """
    arns = Arns(stage.settings, account="${AWS::AccountId}", region="${AWS::Region}")
    document: dict[str, Any] = _sub_strings(
        policy_document(stage.settings, stage.function_prefix, arns)
    )
    return document


def _sub_strings(value: Any) -> Any:
    if isinstance(value, str) and "${AWS::" in value:
        return {"Fn::Sub": value}
    if isinstance(value, list):
        return [_sub_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _sub_strings(v) for k, v in value.items()}
    return value


def render_json(document: dict[str, Any]) -> str:
    """The JSON text written to files: two-space indent, key order kept, final newline."""
    return json.dumps(document, indent=2) + "\n"


# --- CloudFormation ------------------------------------------------------------------


def table_properties(model: type[Model], name: str) -> dict[str, Any]:
    """The ``AWS::DynamoDB::Table`` properties that create ``model``'s table as PynamoDB does.

    Derived from the model's schema (keys, attribute definitions, global secondary
    indexes and their projections) with on-demand billing.
    """
    if getattr(model.Meta, "billing_mode", None) != PAY_PER_REQUEST_BILLING_MODE:
        raise InfraError(f"{model.__name__}: only PAY_PER_REQUEST tables are supported")
    schema = model._get_schema()

    def keys(key_schema: Iterable[Any]) -> list[dict[str, str]]:
        # DynamoDB wants the partition (HASH) key first.
        return sorted(
            ({"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]} for k in key_schema),
            key=lambda k: k["KeyType"] != "HASH",
        )

    properties: dict[str, Any] = {
        "TableName": name,
        "BillingMode": PAY_PER_REQUEST_BILLING_MODE,
        "AttributeDefinitions": sorted(
            (
                {"AttributeName": a["AttributeName"], "AttributeType": a["AttributeType"]}
                for a in schema["attribute_definitions"]
            ),
            key=lambda a: a["AttributeName"],
        ),
        "KeySchema": keys(schema["key_schema"]),
    }
    indexes = [
        {
            "IndexName": index["index_name"],
            "KeySchema": keys(index["key_schema"]),
            "Projection": dict(index["projection"]),
        }
        for index in schema["global_secondary_indexes"]
    ]
    if indexes:
        properties["GlobalSecondaryIndexes"] = sorted(indexes, key=lambda i: i["IndexName"])
    if schema["local_secondary_indexes"]:
        raise InfraError(f"{model.__name__}: local secondary indexes are not supported")
    return properties


def table_logical_id(model: type[Model]) -> str:
    """``Application`` -> ``ApplicationsTable`` (from the settings field naming the table)."""
    return to_cfn_resource_name(models.TABLE_FIELDS[model]) + "Table"


def load_app(project_dir: Path = PROJECT_DIR) -> Chalice:
    """Import the Chalice app of ``project_dir/app.py`` (its functions decide the template)."""
    spec = importlib.util.spec_from_file_location("_chalice_app", project_dir / "app.py")
    if spec is None or spec.loader is None:
        raise InfraError(f"no Chalice app at {project_dir / 'app.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = getattr(module, "app", None)
    if not isinstance(app, Chalice):
        raise InfraError(f"{project_dir / 'app.py'} defines no Chalice 'app'")
    return app


def app_functions(app: Chalice) -> list[Function]:
    """The app's EventBridge-triggered functions, then its plain ones, in declaration order."""
    functions = [
        Function(
            source.name,
            scheduled=not isinstance(source, (CloudWatchEventConfig, SQSEventConfig)),
            on_event=isinstance(source, CloudWatchEventConfig),
            on_queue=isinstance(source, SQSEventConfig),
        )
        for source in app.event_sources
    ]
    functions += [Function(f.name, scheduled=False) for f in app.pure_lambda_functions]
    return functions


def _check_dimensions(stage: Stage, check: str) -> list[dict[str, str]]:
    """The dimensions a check's metrics carry (``observability.run_metrics``) in ``stage``."""
    return [
        {"Name": metric.CHECK_DIMENSION, "Value": check},
        {"Name": metric.SERVICE_DIMENSION, "Value": stage.service},
    ]


def _alarm(description: str, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "EvaluationPeriods": 1,
            "Period": ALARM_PERIOD_SECONDS,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopic"}],
            **properties,
        },
    }


def merge_template(stage: Stage, functions: Sequence[Function]) -> dict[str, Any]:
    """What ``chalice package --merge-template`` adds to the stage's SAM template."""
    if not any(f.scheduled for f in functions):
        raise InfraError("the app has no scheduled function")
    resources: dict[str, Any] = {
        **table_resources(stage),
        "DeadLetterQueue": dead_letter_queue(stage),
        "DeadLetterQueueSendPolicy": dead_letter_send_policy(stage, functions),
        "AlarmTopic": alarm_topic(stage),
        "AlarmEmailSubscription": alarm_email_subscription(),
        **role_policies(stage, functions),
    }
    for function in functions:
        resources.update(function_resources(stage, function))
    resources.update(fanout_resources(stage, functions))
    resources["DeadLetterQueueDepthAlarm"] = dead_letter_depth_alarm()
    resources.update(notices_failed_alarms(stage))
    if stage.settings.ses_configuration_set is not None:
        # Also narrows record_ses_events' rule: that key keeps its place above.
        resources.update(ses_event_resources(stage, functions))
    resources["Dashboard"] = dashboard(stage, resources)
    return {
        "Parameters": {
            "AlarmEmail": {
                "Type": "String",
                "Default": "",
                "Description": "Address subscribed to the alarms (empty: no subscription)",
            }
        },
        "Conditions": {"HasAlarmEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}},
        "Resources": resources,
        "Outputs": template_outputs(stage),
    }


def table_resources(stage: Stage) -> dict[str, Any]:
    """An ``AWS::DynamoDB::Table`` per model, named as the stage names it."""
    return {
        table_logical_id(model): {
            "Type": "AWS::DynamoDB::Table",
            # The tables hold the CRM's data and the delivery ledger: never dropped
            # with the stack or replaced by an update.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": table_properties(model, table_name(stage.settings, model)),
        }
        for model in models.ALL_MODELS
    }


def dead_letter_queue(stage: Stage) -> dict[str, Any]:
    """The SQS queue that receives the events still failing after their retries."""
    return {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "QueueName": f"{stage.function_prefix}dead-letters",
            "MessageRetentionPeriod": DLQ_RETENTION_SECONDS,
            "SqsManagedSseEnabled": True,
        },
    }


def dead_letter_send_policy(stage: Stage, functions: Sequence[Function]) -> dict[str, Any]:
    """Lets the roles of the EventBridge-invoked functions send to the dead-letter queue."""
    return {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "SendFailedEventsToTheDeadLetterQueue",
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Action": ["sqs:SendMessage"],
                        "Resource": [_dead_letter_queue_arn()],
                    }
                ],
            },
            "Roles": [
                {"Ref": role}
                for role in sorted({f.role_id(stage) for f in functions if f.asynchronous})
            ],
        },
    }


def _dead_letter_queue_arn() -> dict[str, Any]:
    return {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}


def alarm_topic(stage: Stage) -> dict[str, Any]:
    """The SNS topic every alarm notifies."""
    return {
        "Type": "AWS::SNS::Topic",
        "Properties": {"TopicName": f"{stage.function_prefix}alarms"},
    }


def alarm_email_subscription() -> dict[str, Any]:
    """The ``AlarmEmail`` parameter's subscription to the alarm topic, when one is given."""
    return {
        "Type": "AWS::SNS::Subscription",
        "Condition": "HasAlarmEmail",
        "Properties": {
            "TopicArn": {"Ref": "AlarmTopic"},
            "Protocol": "email",
            "Endpoint": {"Ref": "AlarmEmail"},
        },
    }


def role_policies(stage: Stage, functions: Sequence[Function]) -> dict[str, Any]:
    """Each function's role carries its policy file, with the stack's account and region.

    That is the stage policy, and for the fan-out consumer its own (:func:`consumer_policy`).
    """
    # Chalice embeds the policy file; the stack gets the same with its own account.
    policy = stack_policy(stage)
    consumer = _sub_strings(
        consumer_policy(
            stage, Arns(stage.settings, account="${AWS::AccountId}", region="${AWS::Region}")
        )
    )
    return {
        function.role_id(stage): {
            "Properties": {
                "Policies": [
                    {
                        "PolicyName": f"{function.role_id(stage)}Policy",
                        "PolicyDocument": consumer if function.on_queue else policy,
                    }
                ]
            }
        }
        for function in functions
    }


def function_resources(stage: Stage, function: Function) -> dict[str, Any]:
    """A function's name, its errors alarm and (EventBridge-invoked) its invoke config."""
    resources = {
        # The same function names `chalice deploy` uses, which the log policy expects.
        function.logical_id: {
            "Properties": {"FunctionName": stage.function_prefix + function.name}
        },
        f"{function.logical_id}ErrorsAlarm": function_errors_alarm(stage, function),
    }
    if function.asynchronous:
        resources[f"{function.logical_id}InvokeConfig"] = invoke_config(function)
    return resources


def function_errors_alarm(stage: Stage, function: Function) -> dict[str, Any]:
    """Fires when the function fails (``AWS/Lambda`` ``Errors``)."""
    return _alarm(
        f"{stage.function_prefix + function.name} failed "
        "(an error, a timeout or DeliveryIncomplete after transient errors)",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Dimensions=[{"Name": "FunctionName", "Value": {"Ref": function.logical_id}}],
        Statistic="Sum",
    )


def invoke_config(function: Function) -> dict[str, Any]:
    """An ``AWS::Lambda::EventInvokeConfig``: retries, maximum age, then the dead-letter queue."""
    return {
        "Type": "AWS::Lambda::EventInvokeConfig",
        # The role must be able to write to the queue before Lambda checks it.
        "DependsOn": ["DeadLetterQueueSendPolicy"],
        "Properties": {
            "FunctionName": {"Ref": function.logical_id},
            "Qualifier": "$LATEST",
            "MaximumRetryAttempts": MAX_RETRY_ATTEMPTS,
            "MaximumEventAgeInSeconds": MAX_EVENT_AGE_SECONDS,
            "DestinationConfig": {"OnFailure": {"Destination": _dead_letter_queue_arn()}},
        },
    }


def dead_letter_depth_alarm() -> dict[str, Any]:
    """Fires when an event reaches the dead-letter queue."""
    return _alarm(
        "A scheduled run failed after its retries and was sent to the dead-letter queue",
        Namespace="AWS/SQS",
        MetricName="ApproximateNumberOfMessagesVisible",
        Dimensions=[
            {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}
        ],
        Statistic="Maximum",
    )


def notices_failed_alarms(stage: Stage) -> dict[str, Any]:
    """One alarm per check on its ``NoticesFailed`` metric."""
    return {
        f"{to_cfn_resource_name(check)}NoticesFailedAlarm": _alarm(
            f"{check}: a notice was rejected permanently by SES (see `history`, then "
            "`retry-failed` once the cause is fixed)",
            Namespace=metric.NAMESPACE,
            MetricName=metric.NOTICES_FAILED,
            Dimensions=_check_dimensions(stage, check),
            Statistic="Sum",
        )
        for check in CHECKS
    }


def template_outputs(stage: Stage) -> dict[str, Any]:
    """The stack's outputs: the dead-letter queue, the alarm topic and the configuration set."""
    outputs: dict[str, Any] = {
        "DeadLetterQueueUrl": {"Value": {"Ref": "DeadLetterQueue"}},
        "FanoutQueueUrl": {"Value": {"Ref": "FanoutQueue"}},
        "AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
    }
    if stage.settings.ses_configuration_set is not None:
        outputs["ConfigurationSetName"] = {"Value": {"Ref": "SesConfigurationSet"}}
    return outputs


def fanout_resources(stage: Stage, functions: Sequence[Function]) -> dict[str, Any]:
    """The fan-out queue, its dead-letter queue and alarms, and the functions' wiring to it.

    The scheduled functions get the queue's URL (``FANOUT_QUEUE_URL``: without it a run
    never fans out). The consumer's event source is pointed at the queue with partial
    batch responses (``ReportBatchItemFailures``, which Chalice cannot set); its role
    alone may receive from it (:func:`consumer_policy`, see :func:`role_policies`).
    """
    [consumer] = [f for f in functions if f.on_queue]
    resources: dict[str, Any] = {
        "FanoutQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": fanout_queue_name(stage.function_prefix),
                "VisibilityTimeout": FANOUT_VISIBILITY_SECONDS,
                "MessageRetentionPeriod": FANOUT_RETENTION_SECONDS,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["FanoutDeadLetterQueue", "Arn"]},
                    "maxReceiveCount": FANOUT_MAX_RECEIVES,
                },
            },
        },
        "FanoutDeadLetterQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "QueueName": fanout_queue_name(stage.function_prefix) + "-dead-letters",
                "MessageRetentionPeriod": DLQ_RETENTION_SECONDS,
                "SqsManagedSseEnabled": True,
            },
        },
        consumer.logical_id: {
            # The event source mapping needs the queue first (it names it, not refs it).
            "DependsOn": ["FanoutQueue"],
            "Properties": {
                "FunctionName": stage.function_prefix + consumer.name,
                "Timeout": FANOUT_TIMEOUT_SECONDS,
                # Each consumer's share of the SES quota (see chalicelib.fanout.PacedMailer).
                "Environment": {"Variables": {"FANOUT_CONSUMER_RATE": f"{fanout.CONSUMER_RATE:g}"}},
                "Events": {
                    f"{consumer.logical_id}SqsEventSource": {
                        "Properties": {
                            # Replaces the placeholder queue app.py names (same key: merged).
                            "Queue": {
                                "Fn::Sub": (
                                    "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
                                    + fanout_queue_name(stage.function_prefix)
                                )
                            },
                            "FunctionResponseTypes": ["ReportBatchItemFailures"],
                        }
                    }
                },
            },
        },
        "FanoutDeadLetterQueueDepthAlarm": _alarm(
            "A fan-out message failed every receive (a poison message, or notices SES kept "
            "refusing) and reached the fan-out dead-letter queue",
            Namespace="AWS/SQS",
            MetricName="ApproximateNumberOfMessagesVisible",
            Dimensions=[
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": ["FanoutDeadLetterQueue", "QueueName"]},
                }
            ],
            Statistic="Maximum",
        ),
        "FanoutOldestMessageAlarm": _alarm(
            "The fan-out queue's oldest message is getting old: the consumer is stuck or "
            "slower than the producers (messages past the maximum age are dropped)",
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[
                {"Name": "QueueName", "Value": {"Fn::GetAtt": ["FanoutQueue", "QueueName"]}}
            ],
            Statistic="Maximum",
            Threshold=FANOUT_AGE_ALARM_SECONDS,
        ),
    }
    for function in functions:
        if function.scheduled:
            resources[function.logical_id] = {
                "Properties": {
                    "FunctionName": stage.function_prefix + function.name,
                    "Environment": {"Variables": {"FANOUT_QUEUE_URL": {"Ref": "FanoutQueue"}}},
                }
            }
    return resources


def ses_event_resources(stage: Stage, functions: Sequence[Function]) -> dict[str, Any]:
    """The stage's SES configuration set, its events to EventBridge, and the address alarms.

    Every message is sent through the set (``SES_CONFIGURATION_SET``). It keeps hard-
    bounced and complained addresses on the account's suppression list, and publishes
    the events :mod:`chalicelib.ses_events` records to the default event bus, where
    the rule Chalice makes for ``record_ses_events`` picks them up. That rule's
    pattern (fixed in app.py) is narrowed here to the stage's own configuration set,
    so another stage's events do not invoke the function at all.
    """
    name = stage.settings.ses_configuration_set
    if name is None:
        raise InfraError(f"stage {stage.name} sets no SES_CONFIGURATION_SET")
    resources: dict[str, Any] = {
        "SesConfigurationSet": ses_configuration_set(name),
        "SesEventsToEventBridge": ses_event_destination(),
    }
    for function in functions:
        if function.on_event and function.name == SES_EVENTS_FUNCTION:
            resources[function.logical_id] = ses_events_function(stage, function, name)
    resources.update(address_alarms(stage))
    return resources


def ses_configuration_set(name: str) -> dict[str, Any]:
    """The ``AWS::SES::ConfigurationSet``, suppressing bounced and complained addresses."""
    return {
        "Type": "AWS::SES::ConfigurationSet",
        "Properties": {
            "Name": name,
            "SuppressionOptions": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]},
        },
    }


def ses_event_destination() -> dict[str, Any]:
    """The configuration set's events (:data:`SES_EVENT_TYPES`) to the default event bus."""
    return {
        "Type": "AWS::SES::ConfigurationSetEventDestination",
        "Properties": {
            "ConfigurationSetName": {"Ref": "SesConfigurationSet"},
            "EventDestination": {
                "Name": "ledger-events",
                "Enabled": True,
                "MatchingEventTypes": list(SES_EVENT_TYPES),
                "EventBridgeDestination": {
                    # SES publishes to the default bus only.
                    "EventBusArn": {
                        "Fn::Sub": (
                            "arn:${AWS::Partition}:events:${AWS::Region}:"
                            "${AWS::AccountId}:event-bus/default"
                        )
                    }
                },
            },
        },
    }


def ses_events_function(stage: Stage, function: Function, configuration_set: str) -> dict[str, Any]:
    """``record_ses_events`` with its rule's pattern narrowed to the stage's configuration set."""
    own_set = {"mail": {"tags": {"ses:configuration-set": [configuration_set]}}}
    return {
        "Properties": {
            "FunctionName": stage.function_prefix + function.name,
            "Events": {
                f"{function.logical_id}Event": {"Properties": {"Pattern": {"detail": own_set}}}
            },
        }
    }


def address_alarms(stage: Stage) -> dict[str, Any]:
    """Per check, an alarm on each metric of :data:`ADDRESS_METRICS` (bounces, complaints)."""
    return {
        f"{to_cfn_resource_name(check)}{name}Alarm": _alarm(
            f"{check}: a notice {what}; see `history --recipient`",
            Namespace=metric.NAMESPACE,
            MetricName=name,
            Dimensions=_check_dimensions(stage, check),
            Statistic="Sum",
        )
        for check in CHECKS
        for name, what in ADDRESS_METRICS.items()
    }


def check_alarms(stage: Stage, check: str, resources: dict[str, Any]) -> list[str]:
    """The logical ids of ``check``'s alarms among ``resources``: its function's errors,
    then its failed, bounced and complained notices (those the stage has)."""
    wanted = [
        f"{to_cfn_resource_name(SCHEDULED_PREFIX + check)}ErrorsAlarm",
        f"{to_cfn_resource_name(check)}NoticesFailedAlarm",
        *(f"{to_cfn_resource_name(check)}{name}Alarm" for name in ADDRESS_METRICS),
    ]
    return [name for name in wanted if name in resources]


def dashboard(stage: Stage, resources: dict[str, Any]) -> dict[str, Any]:
    """A CloudWatch dashboard: per check, its counts and run duration beside its alarms.

    A row per check: ``NoticesSent``, ``NoticesFailed``, ``NoticesDeferred`` and
    ``ItemsInvalid`` summed per hour, ``RunDuration`` (average and maximum), and the
    state of the check's alarms; above them, every other alarm of the stack. The
    metrics carry the dimensions a run emits (``check``, ``service``). Alarm names are
    CloudFormation's, so the body is an ``Fn::Sub`` of their ARNs.
    """
    alarm_ids = [name for name, r in resources.items() if r.get("Type") == "AWS::CloudWatch::Alarm"]
    per_check = {check: check_alarms(stage, check, resources) for check in CHECKS}
    mine = {name for names in per_check.values() for name in names}
    widgets: list[dict[str, Any]] = [
        _alarm_widget("Alarms of the stack", [a for a in alarm_ids if a not in mine], y=0)
    ]
    for row, (check, alarms) in enumerate(per_check.items()):
        y = 4 + 6 * row
        dimensions = ["check", check, "service", stage.service]
        counts = [
            [metric.NAMESPACE, name, *dimensions, {"stat": "Sum", "label": label}]
            for name, label in DASHBOARD_COUNTS
        ]
        duration = [
            [metric.NAMESPACE, metric.RUN_DURATION, *dimensions, {"stat": stat, "label": stat}]
            for stat in ("Average", "Maximum")
        ]
        widgets += [
            _metric_widget(f"{check}: notices per hour", counts, x=0, y=y),
            _metric_widget(f"{check}: run duration (ms)", duration, x=8, y=y),
            _alarm_widget(f"{check}: alarms", alarms, x=16, y=y, width=8, height=6),
        ]
    body = json.dumps({"widgets": widgets}, separators=(",", ":"))
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {
            "DashboardName": f"{stage.function_prefix}checks",
            "DashboardBody": {
                "Fn::Sub": [body, {name: {"Fn::GetAtt": [name, "Arn"]} for name in alarm_ids}]
            },
        },
    }


def _metric_widget(title: str, metrics: list[list[Any]], *, x: int, y: int) -> dict[str, Any]:
    return {
        "type": "metric",
        "x": x,
        "y": y,
        "width": 8,
        "height": 6,
        "properties": {
            "title": title,
            "view": "timeSeries",
            "region": "${AWS::Region}",
            "period": DASHBOARD_PERIOD_SECONDS,
            "metrics": metrics,
        },
    }


def _alarm_widget(
    title: str, alarms: list[str], *, y: int, x: int = 0, width: int = 24, height: int = 4
) -> dict[str, Any]:
    return {
        "type": "alarm",
        "x": x,
        "y": y,
        "width": width,
        "height": height,
        "properties": {"title": title, "alarms": [f"${{{name}}}" for name in alarms]},
    }
