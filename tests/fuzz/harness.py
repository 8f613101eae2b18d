"""Run hostile worlds through the three checks on moto and add up what the oracle finds."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from email.utils import getaddresses
from typing import TYPE_CHECKING

import boto3
from freezegun import freeze_time
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from chalicelib.config import Settings
from chalicelib.models import LOOK_AT_NEXT_RUN, NOTES_PENDING, REPAYMENTS_PENDING
from chalicelib.runner import run_check
from tests.conftest import ENVIRONMENT
from tests.fuzz.oracle import Sent, Tally, judge
from tests.fuzz.strategies import TABLES, TODAY, Case, Item, worlds
from tests.support import REGION, SENDER, provisioned, sydney

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, WriteRequestTypeDef

CHECKS = ("stale_applications", "note_reminders", "repayment_reminders")
# Noon on the business date: inside every check's window.
NOON = sydney(f"{TODAY.isoformat()} 12:00")


@contextmanager
def environment() -> Iterator[None]:
    """The service's settings and fake credentials, as the test suite sets them."""
    saved = dict(os.environ)
    for name in [n for n in os.environ if n.startswith(("AWS_", "POWERTOOLS_"))]:
        del os.environ[name]
    os.environ.pop("DYNAMODB_ENDPOINT_URL", None)
    os.environ.update(ENVIRONMENT)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def write(world: list[Case], table_names: dict[str, str]) -> None:
    """Write every item of the world with the low-level client, 25 per BatchWriteItem."""
    client = boto3.client("dynamodb", region_name=REGION)
    by_table: dict[str, list[dict[str, AttributeValueTypeDef]]] = {}
    for case in world:
        for item in case.items:
            by_table.setdefault(table_names[item.table], []).append(pending_marks(item))
    for table, items in by_table.items():
        for start in range(0, len(items), 25):
            requests: list[WriteRequestTypeDef] = [
                {"PutRequest": {"Item": raw}} for raw in items[start : start + 25]
            ]
            client.batch_write_item(RequestItems={table: requests})


def pending_marks(item: Item) -> dict[str, AttributeValueTypeDef]:
    """The item with the marks the CRM writes (README, Contract with the CRM).

    A note is marked when its remind date is a string (the index's range key: DynamoDB
    refuses a marked note whose remind date is another type), every repayment is (its
    range key is the mark's own ``next_notice_on``): a hostile paid date is reported.
    """
    raw = dict(item.raw)
    if item.table == "notes" and "S" in raw.get("remind_date", {}):
        raw.setdefault("pending_check", {"S": NOTES_PENDING})
    elif item.table == "repayments":
        raw.setdefault("pending_check", {"S": REPAYMENTS_PENDING})
        raw.setdefault("next_notice_on", {"S": LOOK_AT_NEXT_RUN})
    return raw


def failed_addresses(table: str) -> set[str]:
    """Addresses whose ledger entry is failed with a reason (the harness may Scan)."""
    client = boto3.client("dynamodb", region_name=REGION)
    found: set[str] = set()
    for page in client.get_paginator("scan").paginate(TableName=table):
        for entry in page["Items"]:
            status = entry.get("status", {}).get("S")
            if status == "failed" and entry.get("failure_reason", {}).get("S"):
                found.add(entry.get("recipient_email", {}).get("S", "").lower())
    return found


def run_world(world: list[Case], at: datetime = NOON) -> Tally:
    """Write ``world`` into a fresh embedded AWS, run the three checks at ``at``, judge it."""
    with mock_aws(), freeze_time(at):
        service = Settings.from_env()
        provisioned(service)
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        table_names = {name: getattr(service.tables, name) for name in TABLES}
        write(world, table_names)
        summaries = []
        crashes = []
        for check in CHECKS:
            try:
                summaries.append(run_check(check, at=at, now=at))
            except Exception as exc:  # any exception is what the fuzz counts as a crash
                crashes.append(f"{check}: {type(exc).__name__}: {str(exc)[:200]}")
        captured = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
        sent = [
            Sent(m.raw_data, [addr for _, addr in getaddresses(m.destinations)]) for m in captured
        ]
        failed = failed_addresses(table_names["notifications"])
    return judge(world, summaries, crashes, sent, failed)


def explore(items: int, seed_value: int, cases: int = 60, batch: int = 8) -> Tally:
    """Run hypothesis-drawn worlds of ``cases`` cases until ``items`` hostile items ran."""
    total = Tally()
    round_number = 0
    with environment():
        while total.hostile < items:
            left = items - total.hostile
            # Over two hostile items per case on average; no more worlds than needed.
            examples = max(1, min(batch, math.ceil(left / (cases * 2))))

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
                print_blob=False,
                # A world holds megabytes of text: never print one.
                verbosity=Verbosity.quiet,
            )
            @seed(seed_value * 100_003 + round_number)
            @given(worlds(cases))
            def one_world(world: list[Case]) -> None:
                total.add(run_world(world))

            one_world()
            round_number += 1
    return total


def table(tally: Tally) -> str:
    """The fuzz's figures as a small text table."""
    rows: list[tuple[str, object]] = [
        ("worlds (one hypothesis example each)", tally.worlds),
        ("items written", tally.items),
        ("  hostile", tally.hostile),
        *((f"    {name}", tally.hostile_by_table[name]) for name in TABLES),
        ("  valid", tally.valid),
        ("emails expected", tally.emails_expected),
        ("messages SES accepted", tally.messages),
        ("bad items expected to be reported", tally.reports_expected),
        ("  reported by id with a reason", tally.reports_found),
        ("unsendable notices expected failed", tally.failed_expected),
        ("crashed runs", tally.crashes),
        ("valid notices missed", tally.missed),
        ("unexpected messages", tally.unexpected),
        ("unreported bad items", tally.unreported),
        ("reported more than once", tally.duplicate_reports),
        ("valid items reported as bad", tally.false_reports),
        ("reports not shortened", tally.untruncated),
        ("header injections", tally.injections),
        ("unsafe messages", tally.unsafe),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':<{width}}  count", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value:>5}" for name, value in rows]
    return "\n".join(lines)


def final_line(tally: Tally) -> str:
    """The one line the fuzz ends with."""
    return (
        f"fuzz: {tally.hostile} hostile items, {tally.crashes} crashes, "
        f"{tally.unreported} unreported, {tally.injections} header injections, "
        f"{tally.unsafe} unsafe messages"
    )
