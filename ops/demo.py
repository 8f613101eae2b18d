"""``make demo``: run the three checks for a date on an embedded AWS (moto).

A run on empty CRM tables seeds a realistic data set; the embedded tables (CRM
items and the delivery ledger) are saved to ``.demo/state.json`` after every run
and loaded before the next, so running the demo again for the same date sends
nothing new. ``python -m ops.cli --embedded ...`` works on the same state.
Every email SES accepted is written to the outbox as ``.eml`` and ``.html`` with
an ``index.html`` to open in a browser.
"""

from __future__ import annotations

import argparse
import email
import html
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.awsrequest import AWSResponse

from chalicelib import clients, models
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.observability import logger
from chalicelib.registry import CHECKS
from chalicelib.run import RunSummary
from chalicelib.runner import run_check
from ops.provisioning import provision
from ops.seed import seed
from ops.stages import REGION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

SENDER = "reminders@lender.example.com.au"
# The lender every demo email comes from: placeholders (a stage sets its own, see README).
LENDER_ENVIRONMENT = {
    "LENDER_NAME": "Example Home Loans",
    "LENDER_LEGAL_NAME": "Example Home Loans Pty Ltd",
    "LENDER_ABN": "12 345 678 901",
    "LENDER_ADDRESS": "PO Box 1234, Sydney NSW 2001",
    "LENDER_PHONE": "1300 000 000",
    "LENDER_EMAIL": "loans@lender.example.com.au",
    "LENDER_REPLY_TO": "loans@lender.example.com.au",
}
DEMO_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo",
    "AWS_SESSION_TOKEN": "demo",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "APPLICATIONS_TABLE": "demo-applications",
    "NOTES_TABLE": "demo-notes",
    "REPAYMENTS_TABLE": "demo-repayments",
    "STAFF_TABLE": "demo-staff",
    "BORROWERS_TABLE": "demo-borrowers",
    "NOTIFICATIONS_TABLE": "demo-notifications",
    "SENDER_EMAIL": SENDER,
    **LENDER_ENVIRONMENT,
    "BUSINESS_TIMEZONE": "Australia/Sydney",
    # moto's in-process backends do not apply writes atomically across threads (AWS does):
    # the embedded AWS is sent to from one worker.
    "SEND_CONCURRENCY": "1",
}
# Variables that could point the embedded AWS at a real account or another endpoint.
_REAL_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "DYNAMODB_ENDPOINT_URL",
)
# Midday is inside every check's business-hours window.
RUN_AT = time(12, 0)


@dataclass(frozen=True)
class Outgoing:
    """An email SES accepted during the demo."""

    message_id: str
    message: EmailMessage
    # The message exactly as SES received it (7-bit clean: our own encoding).
    raw: bytes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ops.demo``."""
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="business date to run for, YYYY-MM-DD (default: today in Sydney)",
    )
    parser.add_argument("--outbox", type=Path, default=Path("outbox"))
    parser.add_argument("--state", type=Path, default=Path(".demo/state.json"))
    args = parser.parse_args(argv)

    # The summary table below reports invalid items; keep the JSON log for errors.
    level = logger.log_level
    logger.setLevel("ERROR")
    try:
        with embedded_aws(args.state) as settings:
            day = args.date or datetime.now(settings.timezone).date()
            summaries, sent, seeded = _run(settings, day)
    finally:
        logger.setLevel(level)
    written = write_outbox(sent, args.outbox / day.isoformat())
    print(_report(day, summaries, seeded, written, args.outbox / day.isoformat()))
    return 1 if any(s.retrying for s in summaries) else 0


@contextmanager
def embedded_aws(state: Path) -> Iterator[Settings]:
    """Run the block on an embedded AWS (moto) holding the tables saved in ``state``.

    The demo's environment (``DEMO_ENVIRONMENT``) replaces the shell's for the
    block, so nothing can reach a real account; the tables are created from the
    models, the demo sender is verified in SES, the saved items are loaded, and
    every table is saved back to ``state`` when the block ends (also on errors,
    as a real account would keep what was written).
    """
    previous = {name: os.environ.get(name) for name in (*DEMO_ENVIRONMENT, *_REAL_AWS_VARIABLES)}
    os.environ.update(DEMO_ENVIRONMENT)
    for name in _REAL_AWS_VARIABLES:
        os.environ.pop(name, None)
    try:
        settings = Settings.from_env()
        from moto import mock_aws

        session = clients.session()
        with mock_aws():
            provision(settings)
            boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
            # moto has no SESv2 GetAccount: the embedded SES is a new production account.
            # (botocore-stubs type every handler as returning None; a before-call
            # handler's answer replaces the call.)
            session.register("before-call.sesv2.GetAccount", _demo_account)  # type: ignore[arg-type]
            if state.exists():
                load_state(state)
            try:
                yield settings
            finally:
                session.unregister("before-call.sesv2.GetAccount", _demo_account)  # type: ignore[arg-type]
                save_state(state)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _demo_account(**_: object) -> tuple[AWSResponse, dict[str, object]]:
    """GetAccount of the embedded SES: 14 emails a second, 50,000 a day, none sent yet."""
    # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
    response = AWSResponse(f"https://email.{REGION}.amazonaws.com", 200, {}, None)  # type: ignore[arg-type]
    quota = {"Max24HourSend": 50_000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0}
    return response, {
        "SendQuota": quota,
        "SendingEnabled": True,
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }


def crm_is_empty() -> bool:
    """True when no CRM table holds an item (nothing saved yet, or only the ledger)."""
    crm = [model for model in models.ALL_MODELS if model is not models.Notification]
    return not any(next(iter(model.scan(limit=1)), None) for model in crm)


def _run(settings: Settings, day: date) -> tuple[list[RunSummary], list[Outgoing], bool]:
    seeded = crm_is_empty()
    if seeded:
        seed(day, settings.timezone)
    at = datetime.combine(day, RUN_AT, settings.timezone)
    summaries = []
    for check in CHECKS:
        try:
            # No CloudWatch here: the summary table below shows the run's counts.
            summary = run_check(
                check, at=at, now=at.astimezone(UTC), settings=settings, emit_metrics=False
            )
            summaries.append(summary)
        except DeliveryIncomplete as exc:
            summaries.append(exc.summary)
    return summaries, captured(), seeded


def captured() -> list[Outgoing]:
    """Every email the embedded SES accepted since the embedded AWS started."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    messages = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    out = []
    for raw in messages:
        parsed = email.message_from_string(raw.raw_data, policy=default)
        assert isinstance(parsed, EmailMessage)
        out.append(Outgoing(message_id=raw.id, message=parsed, raw=raw.raw_data.encode("utf-8")))
    return out


def save_state(path: Path) -> None:
    """Save every embedded table's items (the demo's stand-in for a persistent AWS)."""
    client = boto3.client("dynamodb", region_name=REGION)
    tables: dict[str, list[dict[str, AttributeValueTypeDef]]] = {}
    for model in models.ALL_MODELS:
        name = model.Meta.table_name
        pages = client.get_paginator("scan").paginate(TableName=name)
        tables[name] = [item for page in pages for item in page["Items"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tables, indent=1, sort_keys=True), encoding="utf-8")


def load_state(path: Path) -> None:
    """Put the saved items back into the freshly created embedded tables."""
    client = boto3.client("dynamodb", region_name=REGION)
    for table, items in json.loads(path.read_text(encoding="utf-8")).items():
        for item in items:
            client.put_item(TableName=table, Item=item)


def write_outbox(sent: Sequence[Outgoing], folder: Path) -> list[Path]:
    """Write each new email as ``.eml`` and its HTML part as ``.html``; index the folder.

    The ``.eml`` is the message as SES received it, byte for byte; text files are
    UTF-8 whatever the locale (names such as Zoë or Nguyễn Thị Hoa).
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for outgoing in sent:
        message = outgoing.message
        to = message["To"].addresses[0].username
        slug = re.sub(r"[^a-z0-9]+", "-", f"{to} {message['Subject']}".lower()).strip("-")
        stem = f"{len(list(folder.glob('*.eml'))) + 1:03d}-{slug[:70]}"
        eml = folder / f"{stem}.eml"
        eml.write_bytes(outgoing.raw)
        body = message.get_body(preferencelist=("html",))
        (folder / f"{stem}.html").write_text(
            body.get_content() if body is not None else "", encoding="utf-8"
        )
        written.append(eml)
    _write_index(folder)
    return written


def _write_index(folder: Path) -> None:
    rows = []
    for eml in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(eml.read_bytes(), policy=default)
        rows.append(
            f"<tr><td>{html.escape(str(message['To']))}</td>"
            f'<td><a href="{eml.stem}.html">{html.escape(str(message["Subject"]))}</a></td>'
            f'<td><a href="{eml.name}">{eml.name}</a></td></tr>'
        )
    (folder / "index.html").write_text(
        '<!DOCTYPE html><html lang="en-AU"><head><meta charset="utf-8">'
        f'<title>Outbox {folder.name}</title></head><body style="font-family:sans-serif">'
        f"<h1>Outbox for {folder.name}</h1><p>{len(rows)} email(s) sent for this date.</p>"
        '<table cellpadding="6"><tr><th>To</th><th>Subject</th><th>Message</th></tr>'
        + "".join(rows)
        + "</table></body></html>\n",
        encoding="utf-8",
    )


def _report(
    day: date,
    summaries: Sequence[RunSummary],
    seeded: bool,
    written: Sequence[Path],
    outbox: Path,
) -> str:
    head = ("check", "read", "due", "sent", "emails", "skipped", "failed", "retrying", "invalid")
    lines = [
        f"Business date {day.isoformat()} (runs at {RUN_AT:%H:%M} Australia/Sydney) - "
        + ("seeded a new demo CRM" if seeded else "CRM and ledger loaded from the last run"),
        "",
        f"{head[0]:<20}" + "".join(f"{h:>9}" for h in head[1:]),
    ]
    for s in summaries:
        values = (
            s.items_read,
            s.notices_due,
            s.sent,
            s.emails_sent,
            s.skipped,
            s.failed,
            s.retrying,
            s.invalid,
        )
        lines.append(f"{s.check:<20}" + "".join(f"{v:>9}" for v in values))
    for s in summaries:
        for bad in s.invalid_items:
            lines.append(f"  invalid {s.check}: {bad['item_id']}: {bad['reason']}")
    lines.append("")
    if written:
        lines.append(f"{len(written)} email(s) written to {outbox}/ - open {outbox}/index.html")
    else:
        lines.append("No new emails: everything due was already delivered (see the ledger).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
