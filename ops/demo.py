"""``make demo``: run the three checks for a date on an embedded AWS (moto).

A run on empty CRM tables seeds a realistic data set; the embedded tables (CRM
items and the delivery ledger) are saved to ``.demo/state.json`` after every run
and loaded before the next, so running the demo again for the same date sends
nothing new. ``python -m ops.cli --embedded ...`` works on the same state.
Every email SES accepted is written to the outbox as ``.eml`` and ``.html`` with
an ``index.html`` to open in a browser: each email's check, kind, recipient,
subject and time, and what the runs skipped or found invalid, with the reasons.
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
from datetime import UTC, date, datetime, time, tzinfo
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.awsrequest import AWSResponse
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import clients, ledger, models
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.formatting import one_line
from chalicelib.observability import logger
from chalicelib.registry import CHECKS
from chalicelib.run import RunSummary
from chalicelib.runner import InvalidRequest, ManualRun, manual_time, run_check
from ops.provisioning import provision, put_items
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
# The state file's own record (beside the tables): the date the demo CRM was seeded for.
META = "_demo"
RESET = "make demo-reset (it also clears outbox/)"
# The outbox folder's record of the runs that wrote it (index.html's skipped and invalid items).
RUNS_FILE = "runs.json"


class StateError(Exception):
    """The state file cannot be loaded; the message names it and how to start afresh."""


@dataclass
class Embedded:
    """The embedded AWS of a ``with embedded_aws(...)`` block."""

    settings: Settings
    # The business date the saved demo CRM is dated relative to (None: unknown).
    seeded_for: date | None = None
    # False: the block changed nothing worth keeping (a dry run); the state file is left as it was.
    save: bool = True


@dataclass(frozen=True)
class Outgoing:
    """An email SES accepted during the demo."""

    message_id: str
    message: EmailMessage
    # The message exactly as SES received it (7-bit clean: our own encoding).
    raw: bytes


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ops.demo``: 0 done, 1 a notice failed, 2 bad arguments."""
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="business date to run for, YYYY-MM-DD (default: today in Sydney); a date after "
        "today only with --dry-run, as `cli run` takes it",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list what the checks would send; send, write and save nothing",
    )
    parser.add_argument("--outbox", type=Path, default=Path("outbox"))
    parser.add_argument("--state", type=Path, default=Path(".demo/state.json"))
    args = parser.parse_args(argv)

    # The summary table below reports invalid items; keep the JSON log for errors.
    level = logger.log_level
    logger.setLevel("ERROR")
    try:
        with embedded_aws(args.state) as aws:
            day = args.date or datetime.now(aws.settings.timezone).date()
            try:
                _refuse_the_future(aws.settings, day, dry_run=args.dry_run)
            except InvalidRequest as exc:
                aws.save = False
                print(f"make demo: error: {exc} (make demo DATE={day} DRY_RUN=1)", file=sys.stderr)
                return 2
            if args.dry_run:
                aws.save = False
            loaded_for = aws.seeded_for
            summaries, sent, seeded = _run(aws, day, dry_run=args.dry_run)
            folder = args.outbox / day.isoformat()
            written = [] if args.dry_run else write_outbox(sent, folder, summaries)
            ledger_page = (
                None if args.dry_run else _ledger_report(aws.settings, day, seeded, args.outbox)
            )
    except StateError as exc:
        print(f"make demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        logger.setLevel(level)
    status = 1 if any(s.retrying or s.failed for s in summaries) else 0
    try:
        print(_report(day, summaries, seeded, loaded_for, written, folder), flush=True)
        if ledger_page:
            print(ledger_page, flush=True)
    except BrokenPipeError:
        # The reader went away (`make demo | head`): end quietly, as the ops CLI does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


def _refuse_the_future(settings: Settings, day: date, *, dry_run: bool) -> None:
    """A date after today is refused unless the run is dry, exactly as `cli run` does."""
    request = ManualRun(next(iter(CHECKS)), day, dry_run=dry_run)
    manual_time(request, settings, datetime.now(UTC))


@contextmanager
def embedded_aws(state: Path) -> Iterator[Embedded]:
    """Run the block on an embedded AWS (moto) holding the tables saved in ``state``.

    The demo's environment (``DEMO_ENVIRONMENT``) replaces the shell's for the
    block, so nothing can reach a real account; the tables are created from the
    models, the demo sender is verified in SES, the saved items are loaded, and
    every table is saved back to ``state`` when the block ends (also on errors,
    as a real account would keep what was written) unless the block set
    ``save`` to False. A state file that cannot be loaded is a :class:`StateError`
    naming it, and is left as it was.
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
            aws = Embedded(settings, seeded_for=load_state(state) if state.exists() else None)
            try:
                yield aws
            finally:
                session.unregister("before-call.sesv2.GetAccount", _demo_account)  # type: ignore[arg-type]
                if aws.save:
                    save_state(state, aws.seeded_for)
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


def _ledger_report(settings: Settings, day: date, seeded: bool, outbox: Path) -> str:
    """Write ``outbox/report.html`` (``ops.cli report`` of the 30 days to ``day``); a new
    demo CRM first gets a month of ledger history to show. Returns the line to print."""
    from ops import report
    from ops.seed import seed_history

    if seeded:
        seed_history(day, settings.timezone)
    path = outbox / "report.html"
    start, end = report.default_range(day)
    total = report.write_report(path, start, end, datetime.now(settings.timezone)).total
    return (
        f"Ledger report, {start.isoformat()} to {end.isoformat()}: {total.notices} notice(s) "
        f"({total.sent} sent, {total.failed} failed, {total.deferred} deferred, "
        f"{total.bounced} bounced) - open {path}"
    )


def crm_is_empty() -> bool:
    """True when no CRM table holds an item (nothing saved yet, or only the ledger)."""
    crm = [model for model in models.ALL_MODELS if model is not models.Notification]
    return not any(next(iter(model.scan(limit=1)), None) for model in crm)


def _run(
    aws: Embedded, day: date, *, dry_run: bool = False
) -> tuple[list[RunSummary], list[Outgoing], bool]:
    settings = aws.settings
    seeded = crm_is_empty()
    if seeded:
        seed(day, settings.timezone)
        aws.seeded_for = day
    at = datetime.combine(day, RUN_AT, settings.timezone)
    summaries = []
    for check in CHECKS:
        try:
            # No CloudWatch here: the summary table below shows the run's counts.
            summary = run_check(
                check,
                at=at,
                now=at.astimezone(UTC),
                settings=settings,
                emit_metrics=False,
                dry_run=dry_run,
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


def save_state(path: Path, seeded_for: date | None = None) -> None:
    """Save every embedded table's items (the demo's stand-in for a persistent AWS).

    Beside the tables, under ``_demo``, the date the demo CRM was seeded for.
    """
    client = boto3.client("dynamodb", region_name=REGION)
    tables: dict[str, object] = {}
    for model in models.ALL_MODELS:
        name = model.Meta.table_name
        pages = client.get_paginator("scan").paginate(TableName=name)
        tables[name] = [item for page in pages for item in page["Items"]]
    tables[META] = {"seeded_for": seeded_for.isoformat() if seeded_for else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tables, indent=1, sort_keys=True), encoding="utf-8")


def load_state(path: Path) -> date | None:
    """Put the saved items back into the freshly created embedded tables.

    Returns the date the saved CRM was seeded for (None: not recorded). A file that
    is not a state file the tables can take is a :class:`StateError` naming it.
    """
    client = boto3.client("dynamodb", region_name=REGION)
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(tables, dict):
            raise ValueError(f"expected a JSON object of tables, got {type(tables).__name__}")
        meta = tables.pop(META, None) or {}
        seeded_for = meta.get("seeded_for")
        items: list[dict[str, AttributeValueTypeDef]]
        for table, items in tables.items():
            put_items(client, table, items)
        return date.fromisoformat(seeded_for) if seeded_for else None
    except (OSError, ValueError, TypeError, AttributeError, BotoCoreError, ClientError) as exc:
        reason = one_line(f"{type(exc).__name__}: {exc}", 300)
        raise StateError(
            f"cannot load the demo state file {path} ({reason}); start afresh with {RESET}"
        ) from None


def write_outbox(
    sent: Sequence[Outgoing], folder: Path, summaries: Sequence[RunSummary] = ()
) -> list[Path]:
    """Write each new email as ``.eml`` and its HTML part as ``.html``; index the folder.

    Beside each email, ``<stem>.json`` records its check, kind and when it was sent
    (from the ledger), and ``runs.json`` what the runs (``summaries``) skipped or
    found invalid; ``index.html`` shows both. Call it inside ``embedded_aws``.
    The ``.eml`` is the message as SES received it, byte for byte; text files are
    UTF-8 whatever the locale (names such as Zoë or Nguyễn Thị Hoa).
    """
    folder.mkdir(parents=True, exist_ok=True)
    zone = Settings.from_env().timezone
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
        record = _ledger_record(outgoing, zone)
        (folder / f"{stem}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        written.append(eml)
    _record_runs(folder, summaries)
    _write_index(folder)
    return written


def _ledger_record(outgoing: Outgoing, zone: tzinfo) -> dict[str, str]:
    """The check, kind and sending time the ledger holds for an email's message."""
    address = outgoing.message["To"].addresses[0].addr_spec
    entries = models.Notification.by_recipient.query(
        ledger.address_key(address),
        filter_condition=models.Notification.message_id == outgoing.message_id,
    )
    entry = next(iter(entries), None)
    if entry is None:
        return {"check": "", "kind": "", "sent": ""}
    checks = {kind.name: check.name for check in CHECKS.values() for kind in check.kinds}
    moment = entry.sent_at or entry.updated_at
    return {
        "check": checks.get(entry.kind, ""),
        "kind": entry.kind,
        "sent": moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
    }


# What a run's skipped notices are, in index.html and the demo's report.
SKIPPED = "already in the ledger (sent, failed, or claimed by another run)"


def _record_runs(folder: Path, summaries: Sequence[RunSummary]) -> None:
    """Add what each run skipped or found invalid to the folder's ``runs.json``."""
    path = folder / RUNS_FILE
    runs: list[dict[str, object]] = (
        json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    )
    for summary in summaries:
        runs.append(
            {
                "check": summary.check,
                "business_date": summary.business_date,
                "skipped": summary.skipped,
                "suppressed": summary.suppressed,
                "deferred": summary.deferred + summary.quota_deferred,
                "failed": summary.failed,
                "retrying": summary.retrying,
                "invalid_items": summary.invalid_items,
            }
        )
    path.write_text(json.dumps(runs, indent=1), encoding="utf-8")


def _write_index(folder: Path) -> None:
    """``index.html``: every email of the folder, then what the runs skipped and why."""
    e = html.escape
    rows = []
    for eml in sorted(folder.glob("*.eml")):
        message = email.message_from_bytes(eml.read_bytes(), policy=default)
        sidecar = eml.with_suffix(".json")
        record = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
        rows.append(
            f"<tr><td>{e(record.get('check', ''))}</td><td>{e(record.get('kind', ''))}</td>"
            f"<td>{e(str(message['To']))}</td>"
            f'<td><a href="{e(eml.stem)}.html">{e(str(message["Subject"]))}</a></td>'
            f"<td>{e(record.get('sent', ''))}</td>"
            f'<td><a href="{e(eml.name)}">{e(eml.name)}</a></td></tr>'
        )
    runs_file = folder / RUNS_FILE
    runs = json.loads(runs_file.read_text(encoding="utf-8")) if runs_file.exists() else []
    (folder / "index.html").write_text(
        '<!DOCTYPE html><html lang="en-AU"><head><meta charset="utf-8">'
        f'<title>Outbox {e(folder.name)}</title></head><body style="font-family:sans-serif">'
        f"<h1>Outbox for {e(folder.name)}</h1><p>{len(rows)} email(s) sent for this date.</p>"
        '<table id="emails" cellpadding="6"><tr><th>Check</th><th>Kind</th><th>To</th>'
        "<th>Subject</th><th>Sent</th><th>Message</th></tr>"
        + "".join(rows)
        + "</table>"
        + _skipped_section(runs)
        + "</body></html>\n",
        encoding="utf-8",
    )


def _skipped_section(runs: Sequence[dict[str, object]]) -> str:
    """The runs' skipped, suppressed, deferred, failed and invalid items, with the reasons."""
    e = html.escape
    reasons = (
        ("skipped", SKIPPED),
        ("suppressed", "the address hard-bounced or complained before"),
        ("deferred", "left due for the next run (time or the SES quota ran out)"),
        ("failed", "failed permanently (see `history` and `retry-failed`)"),
        ("retrying", "failed transiently; the next run retries"),
    )
    rows = []
    for run in runs:
        check = e(str(run["check"]))
        for field, reason in reasons:
            count = run.get(field, 0)
            if count:
                rows.append(
                    f"<tr><td>{check}</td><td>{e(field)}</td><td>{e(str(count))} notice(s)</td>"
                    f"<td>{e(reason)}</td></tr>"
                )
        invalid = run.get("invalid_items") or []
        assert isinstance(invalid, list)
        for bad in invalid:
            rows.append(
                f"<tr><td>{check}</td><td>invalid</td><td>{e(str(bad.get('item_id', '')))}</td>"
                f"<td>{e(str(bad.get('reason', '')))}</td></tr>"
            )
    if not rows:
        return "<h2>Skipped and invalid items</h2><p>None.</p>"
    return (
        '<h2>Skipped and invalid items</h2><table id="skipped" cellpadding="6">'
        "<tr><th>Check</th><th>What</th><th>Item or count</th><th>Reason</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _report(
    day: date,
    summaries: Sequence[RunSummary],
    seeded: bool,
    loaded_for: date | None,
    written: Sequence[Path],
    outbox: Path,
) -> str:
    head = ("check", "read", "due", "sent", "emails", "skipped", "failed", "retrying", "invalid")
    dry_run = any(s.dry_run for s in summaries)
    lines = [
        f"Business date {day.isoformat()} (runs at {RUN_AT:%H:%M} Australia/Sydney) - "
        + _origin(day, seeded, loaded_for)
        + (" - dry run: nothing sent, written or saved" if dry_run else ""),
        "",
        f"{head[0]:<20}" + "".join(f"{h:>9}" for h in head[1:]),
    ]
    for s in summaries:
        values = (
            s.items_read,
            s.notices_due,
            sum(len(n["keys"]) for n in s.would_send) if s.dry_run else s.sent,
            len(s.would_send) if s.dry_run else s.emails_sent,
            s.skipped,
            s.failed,
            s.retrying,
            s.invalid,
        )
        lines.append(f"{s.check:<20}" + "".join(f"{v:>9}" for v in values))
    for s in summaries:
        for bad in s.invalid_items:
            lines.append(f"  invalid {s.check}: {bad['item_id']}: {bad['reason']}")
    for s in summaries:
        for notice in s.would_send:
            lines.append(
                f"  would send {notice['kind']} to {notice['recipient_email']}: {notice['subject']}"
            )
    lines += ["", _outcome(day, summaries, written, outbox)]
    if not seeded and loaded_for != day:
        lines.append(
            f"To see the demo CRM dated relative to {day.isoformat()}: {RESET}, "
            f"then make demo DATE={day.isoformat()}"
        )
    return "\n".join(lines)


def _origin(day: date, seeded: bool, loaded_for: date | None) -> str:
    """Where the run's CRM came from, and for which date it was seeded."""
    if seeded:
        return f"seeded a new demo CRM dated relative to {day.isoformat()}"
    if loaded_for is None:
        return (
            "CRM and ledger loaded from the last run (the date they were seeded for is "
            "not recorded: seeded by an older version, or imported)"
        )
    if loaded_for == day:
        return "CRM and ledger loaded from the last run"
    apart = (day - loaded_for).days
    return (
        f"CRM and ledger loaded from the last run, seeded for {loaded_for.isoformat()} "
        f"({abs(apart)} day(s) {'later' if apart > 0 else 'earlier'} than this run's date): "
        f"its items are dated relative to {loaded_for.isoformat()}"
    )


def _outcome(
    day: date, summaries: Sequence[RunSummary], written: Sequence[Path], outbox: Path
) -> str:
    """The last line: what was written, or why nothing was (never a guess)."""
    if written:
        return f"{len(written)} email(s) written to {outbox}/ - open {outbox}/index.html"
    if any(s.dry_run for s in summaries):
        count = sum(len(s.would_send) for s in summaries)
        return f"Dry run: {count} email(s) would be sent; nothing sent, written or saved."
    if not any(s.items_read for s in summaries):
        return f"No new emails: the checks read no CRM item due around {day.isoformat()}."
    if any(s.failed or s.retrying for s in summaries):
        return "No new emails: the notices due failed (see `history` and `retry-failed`)."
    skipped = sum(s.skipped for s in summaries)
    if skipped:
        return (
            f"No new emails: the {skipped} notice(s) due are already in the ledger "
            "(sent by an earlier run; see `python -m ops.cli --embedded history`)."
        )
    return f"No new emails: nothing was due on {day.isoformat()}."


if __name__ == "__main__":
    sys.exit(main())
