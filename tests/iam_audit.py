"""The IAM audit: is an AWS operation the Lambda code made allowed by its stage's policy?

``tests/aws_recorder.py`` records every AWS operation made while a check runs or an
SES event is recorded, and holds each test's operations to the policy of the stage
they ran in (:func:`policy_for`): the committed ``.chalice/policy-<stage>.json`` when
the run used a configured stage, else the policy generated for the run's settings.
``tests/test_iam.py`` tests the audit itself and the policies' breadth.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID

from chalicelib.config import Settings, Tables
from ops import infra
from ops.demo import LENDER_ENVIRONMENT
from ops.stages import stage_names

Policy = dict[str, Any]
VARIABLES = {"${aws:PrincipalAccount}": DEFAULT_ACCOUNT_ID}
STAGES = {name: infra.load_stage(name) for name in stage_names()}


# Operations IAM authorizes as another action (SQS's batch calls as their single call).
AUTHORIZED_AS = {"SendMessageBatch": "SendMessage"}


@dataclass(frozen=True)
class AwsCall:
    """One AWS API operation made by the Lambda code (a running check, an SES event)."""

    service: str  # botocore's service name, e.g. "dynamodb", "sesv2"
    prefix: str  # the IAM action prefix (the signing name), e.g. "dynamodb", "ses"
    operation: str  # e.g. "Query"
    region: str
    params: dict[str, Any]
    settings: Settings | None  # of the run (or event) that made it
    test: str  # the test that made it, for the report

    @property
    def action(self) -> str:
        """The IAM action this operation is authorized as, e.g. ``dynamodb:Query``."""
        return f"{self.prefix}:{AUTHORIZED_AS.get(self.operation, self.operation)}"


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
    if call.service == "sqs" and "QueueUrl" in params:
        return [f"{base}{str(params['QueueUrl']).rstrip('/').rpartition('/')[2]}"]
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
            **LENDER_ENVIRONMENT,
            "AWS_REGION": region,
            "SES_CONFIGURATION_SET": configuration_set or "",
        }
    )
    return infra.policy_document(settings, "test-")
