"""Least-privilege IAM, proven on what the code actually does.

``tests/aws_recorder.py`` records every AWS operation made while a check runs
(inside ``chalicelib.runner.run_check``) or an SES event is recorded (inside
``chalicelib.ses_events.record_event``) and, at the end of every test of the suite,
holds each operation to the policy of the stage it ran in (``tests/iam_audit.py``):
the committed ``.chalice/policy-<stage>.json`` when the run used a configured stage
(the integration tests run the ``dev`` stage), else the policy generated for the
run's settings. These tests prove that audit, run every rule under it, and fail on
any wildcard action, on any resource wider than the stage's tables, indexes, sender
identity and configuration set (log groups and the one SES action with no resource
type excepted), and on a DynamoDB grant no running check or recorded SES event used.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

import pytest
from chalice.test import Client
from freezegun import freeze_time
from moto.core.models import DEFAULT_ACCOUNT_ID
from mypy_boto3_sesv2 import SESV2Client
from pynamodb.indexes import Index
from pynamodb.models import Model

from chalicelib import models, ses_events
from chalicelib.config import Settings
from ops import infra, seed
from tests import factories
from tests.aws_recorder import RECORDER
from tests.iam_audit import (
    STAGES,
    AwsCall,
    Policy,
    _as_list,
    allows,
    not_allowed,
    policy_for,
    resources_of,
)
from tests.support import SYDNEY, SuppressionList, run, ses_event, sydney

AUDIT_DAY = "2026-11-23"
# The configuration set of the test stage here, so its runs and SES events are audited
# as a deployed stage's are.
AUDIT_CONFIGURATION_SET = "test-events"
# SES actions that take no resource type but "*" (Service Authorization Reference).
NO_RESOURCE_TYPE = frozenset({"ses:putsuppresseddestination", "ses:getaccount"})


@pytest.fixture(autouse=True)
def stage_with_events(aws_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test stage sends through a configuration set (before any settings are read)."""
    monkeypatch.setenv("SES_CONFIGURATION_SET", AUDIT_CONFIGURATION_SET)


def indexes_of(model: type[Model]) -> list[str]:
    """The index names a model declares."""
    return [
        index.Meta.index_name
        for _, index in inspect.getmembers(model, lambda v: isinstance(v, Index))
    ]


# Long because it spells out the stage's allowed resources independently of the generator, in
# one place, then judges every statement against them; split, the two halves could drift.
def too_broad(policy: Policy, settings: Settings, function_prefix: str) -> list[str]:
    """What in ``policy`` is a wildcard action or reaches beyond the stage's own resources.

    Allowed resources, spelled out independently of the generator: the stage's six
    tables, their declared indexes, the sender's SES identity (address or domain) and
    the stage's configuration set, its fan-out queue; log actions only on the stage's own Lambda log
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
    # The stage's fan-out queue: a run short of time hands notices to it.
    allowed.add(f"arn:aws:sqs:{region}:{account}:{function_prefix}fanout")
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
        {
            (e.send_token, e.message_id, e.recipient_email)
            for e in models.Notification.scan()
            if e.send_token is not None  # the notices, not the checks' schedule entries
        }
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


# --- the tests --------------------------------------------------------------------------


def test_every_rule_of_every_check_and_every_ses_event_runs_within_its_policy(
    service: Settings,
    ses: SESV2Client,
    suppression_list: SuppressionList,
    aws_calls: Callable[[], list[AwsCall]],
) -> None:
    """Every other test is audited when it ends; this one makes sure every rule is run."""
    run_every_rule(ses)

    calls = aws_calls()

    assert not_allowed(calls, policy_for) == []
    assert {c.action for c in calls} >= {
        "dynamodb:Query",
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "ses:SendEmail",
        "ses:GetAccount",
        "ses:PutSuppressedDestination",
    }


def test_the_dev_stage_runs_under_its_committed_policy_file(
    client: Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    """The committed dev policy is exercised directly, not only through the generator."""
    factories.crm()
    factories.application()
    factories.note(remind_date=AUDIT_DAY)
    factories.repayment(due_date="2026-11-30")
    dev = STAGES["dev"]

    with freeze_time(sydney(f"{AUDIT_DAY} 12:00")):
        for check in ("note_reminders", "repayment_reminders"):
            client.lambda_.invoke("run_check", {"check": check, "date": AUDIT_DAY})

    dev_calls = [c for c in aws_calls() if c.settings and c.settings.tables == dev.settings.tables]
    committed = json.loads(dev.policy_file.read_text())
    assert {c.action for c in dev_calls} >= {"dynamodb:Query", "ses:SendEmail"}
    assert all(policy_for(c) == committed for c in dev_calls)
    assert not_allowed(dev_calls, lambda _: committed) == []


def test_a_test_whose_code_makes_an_operation_its_policy_denies_fails(
    pytester: pytest.Pytester,
) -> None:
    """The recorder's audit fails the test that made the call, naming action and resource."""
    pytester.makepyfile(
        """
        from chalicelib.config import Settings
        from tests.aws_recorder import RECORDER
        from tests.iam_audit import AwsCall

        def test_drops_the_ledger():
            call = AwsCall(
                "dynamodb", "dynamodb", "DeleteTable", "ap-southeast-2",
                {"TableName": "test-notifications"}, Settings.from_env(), "inner",
            )
            RECORDER.calls.append(call)

        def test_reads_nothing():
            pass
        """
    )

    result = pytester.runpytest_inprocess("-p", "tests.aws_recorder")
    # The inner run shares this process's recorder: what it recorded is not this test's.
    RECORDER.calls.clear()

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*operations the stage policy does not allow:*",
            "*dynamodb:DeleteTable on arn:aws:dynamodb:ap-southeast-2:123456789012:"
            "table/test-notifications*",
        ]
    )


def test_a_call_the_policy_does_not_grant_fails_the_audit(
    service: Settings,
    ses: SESV2Client,
    suppression_list: SuppressionList,
    aws_calls: Callable[[], list[AwsCall]],
) -> None:
    """A throwaway policy without UpdateItem stands for a new AWS call without a policy change."""
    run_every_rule(ses)
    calls = aws_calls()
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
    aws_calls: Callable[[], list[AwsCall]],
) -> None:
    run_every_rule(ses)

    unused = unused_dynamodb_grants(infra.policy_document(service, "test-"), aws_calls())

    assert unused == [], "granted but never used by a running check:\n" + "\n".join(unused)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_policy_has_no_wildcard_action_and_nothing_beyond_the_stage(stage: str) -> None:
    config = STAGES[stage]
    committed = json.loads(config.policy_file.read_text())
    consumer = json.loads(config.consumer_policy_file.read_text())

    assert too_broad(committed, config.settings, config.function_prefix) == []
    # The fan-out consumer's file adds only receiving from the stage's own queue
    assert too_broad(consumer, config.settings, config.function_prefix) == []


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
        (
            lambda s: next(x for x in s if x["Sid"] == "HandNoticesToTheFanOutQueue").update(
                Resource=["arn:aws:sqs:*:*:*"]
            ),
            "HandNoticesToTheFanOutQueue: resource arn:aws:sqs:*:*:* is wider",
        ),
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
