"""Least-privilege IAM, proven on what the code actually does.

``tests/aws_recorder.py`` records every AWS operation made while a check runs
(inside ``chalicelib.runner.run_check``) or an SES event is recorded (inside
``chalicelib.ses_events.record_event``), across the whole suite. These tests run
last and hold each operation to the policy of the stage it ran in: the committed
``.chalice/policy-<stage>.json`` when the run used a configured stage (the
integration tests run the ``dev`` stage), else the policy generated for the run's
settings. They also fail on any wildcard action, on any resource wider than the
stage's tables, indexes, sender identity and configuration set (log groups and the
one SES action with no resource type excepted), and on a DynamoDB grant no running
check or recorded SES event ever used.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import date
from typing import Any

import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from mypy_boto3_sesv2 import SESV2Client
from pynamodb.indexes import Index
from pynamodb.models import Model

from chalicelib import models, ses_events
from chalicelib.config import Settings, Tables
from ops import infra, seed
from ops.stages import stage_names
from tests.aws_recorder import AwsCall
from tests.support import SYDNEY, SuppressionList, run, ses_event, sydney

Policy = dict[str, Any]
VARIABLES = {"${aws:PrincipalAccount}": DEFAULT_ACCOUNT_ID}
STAGES = {name: infra.load_stage(name) for name in stage_names()}
AUDIT_DAY = "2026-11-23"
# The configuration set of the test stage here, so its runs and SES events are audited
# as a deployed stage's are.
AUDIT_CONFIGURATION_SET = "test-events"
# SES actions that take no resource type but "*" (Service Authorization Reference).
NO_RESOURCE_TYPE = frozenset({"ses:putsuppresseddestination"})


@pytest.fixture(autouse=True)
def stage_with_events(aws_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test stage sends through a configuration set (before any settings are read)."""
    monkeypatch.setenv("SES_CONFIGURATION_SET", AUDIT_CONFIGURATION_SET)


# --- the audit --------------------------------------------------------------------------


def resources_of(call: AwsCall) -> list[str]:
    """The resource ARNs an operation is authorized on (``*`` when not known here)."""
    base = f"arn:aws:{call.prefix}:{call.region}:{DEFAULT_ACCOUNT_ID}:"
    params = call.params
    if call.service == "dynamodb":
        tables: list[str] = []
        if "TableName" in params:
            tables.append(params["TableName"])
        tables += list(params.get("RequestItems", {}))
        for item in params.get("TransactItems", []):
            tables += [op["TableName"] for op in item.values()]
        if "IndexName" in params:
            return [f"{base}table/{params['TableName']}/index/{params['IndexName']}"]
        return [f"{base}table/{name}" for name in tables] or ["*"]
    if call.service in ("ses", "sesv2") and call.operation.startswith("Send"):
        # Sending through a configuration set is authorized on it as well.
        name = params.get("ConfigurationSetName")
        return [f"{base}identity/{from_address(call)}"] + (
            [f"{base}configuration-set/{name}"] if name else []
        )
    return ["*"]


def from_address(call: AwsCall) -> str:
    """The From address of a send (SES v2 ``FromEmailAddress``, v1 ``Source``)."""
    sender = str(call.params.get("FromEmailAddress") or call.params.get("Source") or "")
    match = re.search(r"<([^>]+)>", sender)
    return match.group(1) if match else sender


def context_of(call: AwsCall) -> dict[str, str]:
    """The condition keys the operation carries."""
    if call.service in ("ses", "sesv2") and call.operation.startswith("Send"):
        return {"ses:FromAddress": from_address(call)}
    return {}


@functools.cache
def _pattern(text: str, *, ignore_case: bool) -> re.Pattern[str]:
    for variable, value in VARIABLES.items():
        text = text.replace(variable, value)
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in text)
    return re.compile(f"^{regex}$", re.IGNORECASE if ignore_case else 0)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(condition: dict[str, Any], context: dict[str, str]) -> bool:
    for operator, tests in condition.items():
        if operator not in ("StringEquals", "StringLike"):
            raise AssertionError(f"the audit does not understand condition {operator!r}")
        for key, wanted in tests.items():
            actual = context.get(key)
            if actual is None:
                return False
            values = _as_list(wanted)
            if operator == "StringEquals" and actual not in values:
                return False
            if operator == "StringLike" and not any(
                _pattern(v, ignore_case=False).match(actual) for v in values
            ):
                return False
    return True


def _statement_matches(
    statement: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> bool:
    if "NotAction" in statement or "NotResource" in statement:
        raise AssertionError("the audit does not understand NotAction/NotResource")
    return (
        any(_pattern(a, ignore_case=True).match(action) for a in _as_list(statement["Action"]))
        and any(
            _pattern(r, ignore_case=False).match(resource) for r in _as_list(statement["Resource"])
        )
        and _condition_holds(statement.get("Condition", {}), context)
    )


def allows(policy: Policy, action: str, resource: str, context: dict[str, str]) -> bool:
    """IAM's verdict for one identity policy: an explicit Deny wins, else an Allow is needed."""
    matching = [
        s for s in _as_list(policy["Statement"]) if _statement_matches(s, action, resource, context)
    ]
    return bool(matching) and all(s["Effect"] == "Allow" for s in matching)


def not_allowed(calls: Iterable[AwsCall], policy_for: Callable[[AwsCall], Policy]) -> list[str]:
    """Every operation (action on resource) the policy of its run does not allow."""
    problems: dict[str, str] = {}
    verdicts: dict[tuple[int, str, str, tuple[tuple[str, str], ...]], bool] = {}
    for call in calls:
        policy = policy_for(call)
        context = context_of(call)
        for resource in resources_of(call):
            key = (id(policy), call.action, resource, tuple(sorted(context.items())))
            if key not in verdicts:
                verdicts[key] = allows(policy, call.action, resource, context)
            if not verdicts[key]:
                problems.setdefault(f"{call.action} on {resource}", call.test)
    return sorted(f"{problem} (first in {test})" for problem, test in problems.items())


def policy_for(call: AwsCall) -> Policy:
    """The committed policy file of the configured stage the run used, else the generated one."""
    settings = call.settings
    assert isinstance(settings, Settings), f"{call.test}: run_check had no settings"
    return _policy(
        settings.tables, settings.sender_email, settings.region, settings.ses_configuration_set
    )


@functools.cache
def _policy(tables: Tables, sender: str, region: str, configuration_set: str | None) -> Policy:
    for stage in STAGES.values():
        if (stage.settings.tables, stage.settings.sender_email) == (tables, sender):
            committed: Policy = json.loads(stage.policy_file.read_text())
            return committed
    settings = Settings.from_env(
        {
            **{f"{f.name.upper()}_TABLE": getattr(tables, f.name) for f in fields(Tables)},
            "SENDER_EMAIL": sender,
            "AWS_REGION": region,
            "SES_CONFIGURATION_SET": configuration_set or "",
        }
    )
    return infra.policy_document(settings, "test-")


def indexes_of(model: type[Model]) -> list[str]:
    """The index names a model declares."""
    return [
        index.Meta.index_name
        for _, index in inspect.getmembers(model, lambda v: isinstance(v, Index))
    ]


def too_broad(policy: Policy, settings: Settings, function_prefix: str) -> list[str]:
    """What in ``policy`` is a wildcard action or reaches beyond the stage's own resources.

    Allowed resources, spelled out independently of the generator: the stage's six
    tables, their declared indexes, the sender's SES identity (address or domain) and
    the stage's configuration set; log actions only on the stage's own Lambda log
    groups; ``*`` only for an action with no resource type (:data:`NO_RESOURCE_TYPE`).
    """
    region, account = settings.region, "${aws:PrincipalAccount}"
    dynamodb = f"arn:aws:dynamodb:{region}:{account}:table/"
    allowed: set[str] = set()
    for model in models.ALL_MODELS:
        table = dynamodb + getattr(settings.tables, models.TABLE_FIELDS[model])
        allowed.add(table)
        allowed.update(f"{table}/index/{name}" for name in indexes_of(model))
    address = settings.sender_email
    allowed.update(
        f"arn:aws:ses:{region}:{account}:identity/{identity}"
        for identity in (address, address.rpartition("@")[2])
    )
    if settings.ses_configuration_set:
        allowed.add(
            f"arn:aws:ses:{region}:{account}:configuration-set/{settings.ses_configuration_set}"
        )
    logs = f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{function_prefix}*"

    problems: list[str] = []
    if policy.get("Version") != "2012-10-17":
        problems.append("Version must be 2012-10-17 (policy variables need it)")
    for statement in _as_list(policy.get("Statement", [])):
        sid = statement.get("Sid", "<no Sid>")
        unknown = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
        if unknown:
            problems.append(f"{sid}: unexpected {sorted(unknown)}")
        if statement.get("Effect") != "Allow":
            problems.append(f"{sid}: only Allow statements are expected")
        actions = [str(a) for a in _as_list(statement.get("Action", []))]
        resources = [str(r) for r in _as_list(statement.get("Resource", []))]
        problems += [f"{sid}: wildcard action {a}" for a in actions if "*" in a or "?" in a]
        if actions and all(a.startswith("logs:") for a in actions):
            problems += [f"{sid}: log resource {r} is not {logs}" for r in resources if r != logs]
            continue
        if actions and all(a.lower() in NO_RESOURCE_TYPE for a in actions):
            problems += [f"{sid}: resource {r} is not *" for r in resources if r != "*"]
            continue
        problems += [
            f"{sid}: resource {r} is wider than the stage" for r in resources if r not in allowed
        ]
        if any(a.lower().startswith("ses:") for a in actions):
            condition = statement.get("Condition", {}).get("StringEquals", {})
            if condition.get("ses:FromAddress") != address:
                problems.append(f"{sid}: sending is not limited to ses:FromAddress {address}")
    return problems


def unused_dynamodb_grants(policy: Policy, calls: Iterable[AwsCall]) -> list[str]:
    """DynamoDB (action, resource) pairs the policy grants but no recorded run performed."""
    used = {
        (call.action.lower(), resource.replace(DEFAULT_ACCOUNT_ID, "${aws:PrincipalAccount}"))
        for call in calls
        for resource in resources_of(call)
    }
    granted = {
        (str(action).lower(), str(resource))
        for statement in _as_list(policy["Statement"])
        for action in _as_list(statement["Action"])
        if str(action).startswith("dynamodb:")
        for resource in _as_list(statement["Resource"])
    }
    return sorted(f"{action} on {resource}" for action, resource in granted - used)


def run_every_rule(ses: SESV2Client) -> None:
    """The seeded CRM (every rule, a malformed item) through the three checks at noon.

    Then SES's events for what they sent: a Send and a Delivery for every message,
    and a hard bounce, a complaint, a soft bounce, a delay and a reject for some.
    """
    seed.seed(date.fromisoformat(AUDIT_DAY), SYDNEY)
    for check in ("stale_applications", "note_reminders", "repayment_reminders"):
        run(check, sydney(f"{AUDIT_DAY} 12:00"), ses)
    # Reading the tokens back is the test's business: a Scan, outside any entry point.
    messages = sorted(
        {(e.send_token, e.message_id, e.recipient_email) for e in models.Notification.scan()}
    )
    extra = ["bounce_permanent", "complaint", "bounce_transient", "delivery_delay", "reject"]
    for n, (token, message_id, address) in enumerate(messages):
        for name in ["send", "delivery", *extra[n : n + 1]]:
            event = ses_event(
                name,
                token=token,
                message_id=message_id,
                address=address,
                configuration_set=AUDIT_CONFIGURATION_SET,
            )
            ses_events.handle(event)


def calls_of(test: pytest.FixtureRequest, calls: list[AwsCall]) -> list[AwsCall]:
    """The operations the current test made."""
    return [c for c in calls if c.test == test.node.nodeid]


# --- the tests --------------------------------------------------------------------------


def test_every_operation_of_a_running_check_in_the_suite_is_allowed_by_its_policy(
    service: Settings,
    ses: SESV2Client,
    suppression_list: SuppressionList,
    recorded_aws_calls: list[AwsCall],
) -> None:
    """Runs last: the whole suite's operations (plus every rule once here) are allowed."""
    run_every_rule(ses)

    problems = not_allowed(recorded_aws_calls, policy_for)

    assert problems == [], "operations the stage policy does not allow:\n" + "\n".join(problems)
    assert {c.action for c in recorded_aws_calls} >= {
        "dynamodb:Query",
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "ses:SendEmail",
        "ses:PutSuppressedDestination",
    }


def test_the_integration_tests_ran_the_dev_stage_under_its_committed_policy_file(
    recorded_aws_calls: list[AwsCall],
) -> None:
    """The committed dev policy is exercised directly, not only through the generator."""
    dev = STAGES["dev"].settings
    dev_calls = [
        c
        for c in recorded_aws_calls
        if isinstance(c.settings, Settings) and c.settings.tables == dev.tables
    ]
    if not dev_calls:
        pytest.skip("the integration tests (dev stage) were not part of this run")

    assert not_allowed(dev_calls, policy_for) == []
    assert {c.action for c in dev_calls} >= {"dynamodb:Query", "ses:SendEmail"}


def test_a_call_the_policy_does_not_grant_fails_the_audit(
    service: Settings,
    ses: SESV2Client,
    suppression_list: SuppressionList,
    recorded_aws_calls: list[AwsCall],
    request: pytest.FixtureRequest,
) -> None:
    """A throwaway policy without UpdateItem stands for a new AWS call without a policy change."""
    run_every_rule(ses)
    calls = calls_of(request, recorded_aws_calls)
    policy = infra.policy_document(service, "test-")
    without_update = {
        **policy,
        "Statement": [s for s in policy["Statement"] if "dynamodb:UpdateItem" not in s["Action"]],
    }

    problems = not_allowed(calls, lambda _: without_update)

    assert not_allowed(calls, lambda _: policy) == []
    assert any(
        p.startswith(
            "dynamodb:UpdateItem on arn:aws:dynamodb:ap-southeast-2:123456789012:"
            "table/test-notifications"
        )
        for p in problems
    ), problems
    assert any("table/test-repayments" in p for p in problems), problems
    assert all(p.startswith("dynamodb:UpdateItem") for p in problems)


def test_the_policy_grants_no_dynamodb_access_a_running_check_does_not_use(
    service: Settings,
    ses: SESV2Client,
    suppression_list: SuppressionList,
    recorded_aws_calls: list[AwsCall],
    request: pytest.FixtureRequest,
) -> None:
    run_every_rule(ses)

    unused = unused_dynamodb_grants(
        infra.policy_document(service, "test-"), calls_of(request, recorded_aws_calls)
    )

    assert unused == [], "granted but never used by a running check:\n" + "\n".join(unused)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_policy_has_no_wildcard_action_and_nothing_beyond_the_stage(stage: str) -> None:
    config = STAGES[stage]
    committed = json.loads(config.policy_file.read_text())

    assert too_broad(committed, config.settings, config.function_prefix) == []


def test_the_policy_of_the_test_environment_is_as_narrow(settings: Settings) -> None:
    assert too_broad(infra.policy_document(settings, "test-"), settings, "test-") == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda s: s[0].update(Action=["dynamodb:*"]), "wildcard action dynamodb:*"),
        (lambda s: s[0].update(Action=["dynamodb:Get*"]), "wildcard action dynamodb:Get*"),
        (lambda s: s[0].update(Resource=["*"]), "resource * is wider than the stage"),
        (
            lambda s: s[0]["Resource"].append(
                "arn:aws:dynamodb:ap-southeast-2:${aws:PrincipalAccount}:table/test-applications/*"
            ),
            "test-applications/* is wider",
        ),
        (
            lambda s: s[0]["Resource"].append(
                "arn:aws:dynamodb:ap-southeast-2:${aws:PrincipalAccount}:table/prod-staff"
            ),
            "prod-staff is wider",
        ),
        (lambda s: s[3].pop("Condition"), "not limited to ses:FromAddress"),
        (lambda s: s[3].update(Resource=["arn:aws:ses:*:*:identity/*"]), "identity/* is wider"),
        (lambda s: s[4].update(Resource=["*"]), "log resource * is not"),
        (lambda s: s.append({"Effect": "Deny", "NotAction": "x"}), "unexpected ['NotAction']"),
    ],
)
def test_the_breadth_check_rejects_wildcards_and_wider_resources(
    settings: Settings, change: Callable[[list[dict[str, Any]]], None], complaint: str
) -> None:
    policy = json.loads(json.dumps(infra.policy_document(settings, "test-")))
    change(policy["Statement"])

    problems = too_broad(policy, settings, "test-")

    assert any(complaint in p for p in problems), problems


def test_the_audit_understands_deny_conditions_and_variables() -> None:
    table = "arn:aws:dynamodb:ap-southeast-2:${aws:PrincipalAccount}:table/t"
    real = f"arn:aws:dynamodb:ap-southeast-2:{DEFAULT_ACCOUNT_ID}:table/t"
    policy: Policy = {
        "Statement": [
            {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": table},
            {
                "Effect": "Allow",
                "Action": ["ses:SendEmail"],
                "Resource": ["arn:aws:ses:*:*:identity/*"],
                "Condition": {"StringLike": {"ses:FromAddress": "*@example.com"}},
            },
        ]
    }
    deny: Policy = {
        "Statement": [
            *policy["Statement"],
            {"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"},
        ]
    }
    ses = "arn:aws:ses:ap-southeast-2:1:identity/a@example.com"

    assert allows(policy, "dynamodb:query", real, {})
    assert not allows(policy, "dynamodb:Query", real.replace(DEFAULT_ACCOUNT_ID, "999"), {})
    assert not allows(policy, "dynamodb:Scan", real, {})
    assert not allows(deny, "dynamodb:Query", real, {})
    assert allows(policy, "ses:SendEmail", ses, {"ses:FromAddress": "a@example.com"})
    assert not allows(policy, "ses:SendEmail", ses, {"ses:FromAddress": "a@example.org"})
    assert not allows(policy, "ses:SendEmail", ses, {})
