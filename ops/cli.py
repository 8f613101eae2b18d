"""Operator commands: ``python -m ops.cli [--stage STAGE | --embedded] COMMAND``.

Exit codes: 0 done; 1 the command ran and something failed (a notice, a record,
an AWS call), with a one-line ``Error:`` message; 2 bad arguments or settings.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from click.decorators import FC

from chalicelib import models, schedule, suppression
from chalicelib.config import ConfigError, Settings
from chalicelib.formatting import one_line
from chalicelib.observability import logger
from ops import provisioning
from ops.stages import StageError, stage_environment, stage_names, stage_region

if TYPE_CHECKING:
    from chalicelib.run import RunSummary
    from ops.crm_import import Plan, WriteReport
    from ops.demo import Embedded
    from ops.infra import Stage

# Commands that need no AWS at all, so --embedded does not start one for them.
LOCAL_COMMANDS = frozenset({"preview", "policy", "template"})
DEFAULT_STATE = Path(".demo/state.json")
OUTBOX = Path("outbox")
# The group's own options, also accepted after the command (`run CHECK --embedded`).
GLOBAL_FLAGS = frozenset({"--embedded", "-v", "--verbose"})
GLOBAL_VALUED = frozenset({"--stage", "--state"})


def hoist_global_options(args: list[str], commands: Collection[str]) -> list[str]:
    """``args`` with the group's options given after the command moved before it.

    No command takes an option of the same name, so the move cannot change what a
    command receives; everything after ``--`` is left alone.
    """
    at = 0
    while at < len(args) and args[at] not in commands:
        at += 2 if args[at] in GLOBAL_VALUED else 1
    if at >= len(args):
        return args
    moved: list[str] = []
    rest: list[str] = []
    tail = args[at + 1 :]
    i = 0
    while i < len(tail):
        arg = tail[i]
        if arg == "--":
            rest += tail[i:]
            break
        if arg in GLOBAL_FLAGS or (arg.split("=", 1)[0] in GLOBAL_VALUED and "=" in arg):
            moved.append(arg)
        elif arg in GLOBAL_VALUED and i + 1 < len(tail):
            moved += tail[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return [*args[:at], *moved, args[at], *rest]


class OpsGroup(click.Group):
    """The command group: runtime failures become one-line errors (exit 1), not tracebacks."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse ``args``, accepting the group's options after the command as well."""
        return super().parse_args(ctx, hoist_global_options(args, self.list_commands(ctx)))

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map unexpected exceptions to :class:`click.ClickException`."""
        from chalicelib.runner import InvalidRequest

        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                # The reader went away (`| head`): click's main ends quietly.
                raise
            raise click.ClickException(one_line(f"{type(exc).__name__}: {exc}", 500)) from exc
        except InvalidRequest as exc:
            raise click.UsageError(str(exc)) from exc
        except Exception as exc:
            raise click.ClickException(one_line(f"{type(exc).__name__}: {exc}", 500)) from exc


@dataclass
class Options:
    """What the group's options decided, for the commands."""

    embedded: bool
    state: Path
    # The embedded AWS (with --embedded and a command that needs AWS).
    aws: Embedded | None = field(default=None)

    def read_only(self) -> None:
        """This command changes nothing: the embedded tables are not saved to --state."""
        if self.aws is not None:
            self.aws.save = False


@click.group(cls=OpsGroup)
@click.option(
    "--stage",
    default=None,
    help="Take table names, sender and thresholds from this stage of .chalice/config.json "
    "(default: from the environment).",
)
@click.option(
    "--embedded",
    is_flag=True,
    help="Work on the embedded AWS (moto) of `make demo` instead of an AWS account; "
    "its tables are loaded from and saved to --state.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_STATE,
    show_default=True,
    help="Where --embedded keeps its tables (shared with `make demo`).",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the service's JSON log (on stderr).")
@click.pass_context
def cli(ctx: click.Context, stage: str | None, embedded: bool, state: Path, verbose: bool) -> None:
    """Operate the loan reminder service: the AWS account in the environment, or --embedded."""
    if stage and embedded:
        raise click.UsageError("--stage and --embedded cannot be combined")
    if ctx.get_parameter_source("state") == ParameterSource.COMMANDLINE and not embedded:
        raise click.UsageError("--state only applies with --embedded")
    if stage:
        # AWS credentials and region still come from the operator's own environment.
        try:
            os.environ.update(stage_environment(stage))
            region = stage_region(stage)
        except StageError as exc:
            raise click.BadParameter(str(exc), param_hint="--stage") from exc
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            os.environ["AWS_DEFAULT_REGION"] = region
    _log_to_stderr(ctx, verbose)
    ctx.obj = Options(embedded=embedded, state=state)
    if embedded and ctx.invoked_subcommand not in LOCAL_COMMANDS:
        from ops.demo import StateError, embedded_aws

        try:
            ctx.obj.aws = ctx.with_resource(embedded_aws(state))
        except StateError as exc:
            raise click.ClickException(str(exc)) from None


def _log_to_stderr(ctx: click.Context, verbose: bool) -> None:
    """Keep stdout for the command's output: JSON log lines go to stderr, errors only."""
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = (handler.stream, logger.log_level)
    handler.setStream(sys.stderr)
    logger.setLevel("INFO" if verbose else "ERROR")

    def restore() -> None:
        handler.setStream(previous[0])
        logger.setLevel(previous[1])

    ctx.call_on_close(restore)


def load_settings() -> Settings:
    """Settings from the environment, as a usage error naming the missing variable."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def bound_settings() -> Settings:
    """Settings from the environment, with the models pointed at its tables."""
    settings = load_settings()
    models.bind(settings)
    return settings


DAY = click.DateTime(formats=["%Y-%m-%d"])


def date_option(help: str) -> Callable[[FC], FC]:
    """``--date YYYY-MM-DD``, passed to the command as ``day``."""
    return click.option("--date", "day", type=DAY, default=None, metavar="YYYY-MM-DD", help=help)


@cli.command()
@click.pass_context
def provision(ctx: click.Context) -> None:
    """Create every missing table (CRM tables and the ledger) with its indexes.

    With ``--stage``, also the stage's fan-out queue and its dead-letter queue.
    """
    settings = load_settings()
    report = provisioning.provision(settings)
    stage = ctx.find_root().params.get("stage")
    if stage:
        from ops import infra

        name = infra.fanout_queue_name(_load_stage(str(stage)).function_prefix)
        report += provisioning.provision_fanout_queue(name, settings.region)
    for table, status in report:
        click.echo(f"{table}: {'already exists' if status == 'exists' else status}")


@cli.command("fanout-on")
@click.pass_context
def fanout_on(ctx: click.Context) -> None:
    """After `chalice deploy --stage S`: turn on what Chalice cannot set for the fan-out.

    Partial batch responses on the consumer's event source, its pace, and the queue's URL
    on every scheduled function (`make deploy` runs it).
    """
    stage = ctx.find_root().params.get("stage")
    if not stage:
        raise click.UsageError("fanout-on needs --stage")
    settings = load_settings()
    prefix = _load_stage(str(stage)).function_prefix
    try:
        report = provisioning.enable_fanout(prefix, settings.region)
    except provisioning.FanOutNotDeployed as exc:
        raise click.ClickException(str(exc)) from None
    for what, status in report:
        click.echo(f"{what}: {status}")


@cli.command()
@date_option("Business date the data set is dated relative to (default: today).")
@click.option("--yes", is_flag=True, help="Do not ask before writing into an AWS account.")
@click.pass_obj
def seed(options: Options, day: datetime | None, yes: bool) -> None:
    """Write the demo CRM data set (staff, borrowers, applications, notes, repayments)."""
    from ops.seed import seed as seed_tables

    settings = bound_settings()
    business_day = day.date() if day else datetime.now(settings.timezone).date()
    if not options.embedded and not yes:
        click.confirm(
            f"Write the demo data set into {settings.tables.staff}, {settings.tables.borrowers}, "
            f"{settings.tables.applications}, {settings.tables.notes} and "
            f"{settings.tables.repayments}?",
            abort=True,
        )
    report = seed_tables(business_day, settings.timezone)
    if options.aws is not None:
        options.aws.seeded_for = business_day
    click.echo(
        f"Seeded for {business_day.isoformat()}: {report.staff} staff, {report.borrowers} "
        f"borrowers, {report.applications} applications, {report.notes} notes, "
        f"{report.repayments} repayments"
    )


@cli.command("mark-pending")
@date_option(
    "Business date taken as today (default: today); marks notes from the catch-up days before."
)
def mark_pending(day: datetime | None) -> None:
    """Mark CRM items written before the pending indexes, so the checks find them.

    Scans the notes and repayments tables (operator tooling, never a check): every
    note with a remind date inside the catch-up window and every unpaid repayment
    without the marks gets them. Run it once after `provision` adds the indexes.
    """
    from ops.crm_import import mark_pending as mark

    settings = bound_settings()
    today = day.date() if day else datetime.now(settings.timezone).date()
    since = today - timedelta(days=settings.thresholds.note_catch_up_days)
    report = mark(since)
    click.echo(f"Marked pending: {report.notes} note(s), {report.repayments} repayment(s)")


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--prune",
    is_flag=True,
    help="Also delete the items the CRM no longer has, from each table whose source models "
    "are all in the dump.",
)
@click.option(
    "--dry-run", is_flag=True, help="Map and report what would be written; write nothing."
)
@click.pass_obj
def import_dump(options: Options, file: Path, prune: bool, dry_run: bool) -> None:
    """Import a Django `dumpdata` JSON export of the CRM (see the README for the mapping).

    An idempotent upsert: importing the same export again changes nothing, and a
    repayment's reminder flags are never cleared. Every record that cannot be
    mapped is reported (its index in the JSON list, model, pk and the reason), and
    so is every table write that failed; the rest is still imported and the exit
    code is 1.
    """
    from ops.crm_import import SOURCES, DumpError, load_dump, plan_import, write_plan

    if dry_run:
        options.read_only()
    settings = bound_settings()
    try:
        records = load_dump(file)
    except DumpError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from exc
    plan = plan_import(records, settings.timezone)
    if not plan.known:
        raise click.ClickException(
            f"{file} holds none of the CRM's models ({', '.join(SOURCES)}); nothing imported. "
            "Export it with: python manage.py dumpdata users brokers borrowers applications "
            "documents --indent 2 -o crm.json"
        )
    report = write_plan(plan, prune=prune, dry_run=dry_run)
    if report.written["applications"] and not dry_run:
        # Imported applications may be stale since before the stale check's last sweep.
        from chalicelib.checks import stale_applications

        schedule.forget_sweep(stale_applications.NAME)
    _echo_import(plan, report, prune=prune, dry_run=dry_run)
    problems = []
    if plan.errors:
        problems.append(f"{len(plan.errors)} of {len(records)} record(s) could not be imported")
    if report.errors:
        problems.append(f"{len(report.errors)} write(s) failed")
    if problems:
        raise click.ClickException("; ".join(problems))


def _echo_import(plan: Plan, report: WriteReport, *, prune: bool, dry_run: bool) -> None:
    """What an import wrote (or would), skipped and pruned; its warnings and failures on stderr."""
    from ops.crm_import import KIND_ORDER, SKIP_REASONS

    head = "Would import" if dry_run else "Imported"
    click.echo(f"{head}: " + ", ".join(f"{report.written[kind]} {kind}" for kind in KIND_ORDER))
    if plan.skipped:
        skipped = ", ".join(
            f"{label} ({n}{'; ' + SKIP_REASONS[label] if label in SKIP_REASONS else ''})"
            for label, n in sorted(plan.skipped.items())
        )
        click.echo(f"Skipped: {skipped}")
    if prune:
        _echo_prune(plan, report, dry_run=dry_run)
    for warning in plan.warnings:
        click.echo(f"Warning: {warning}", err=True)
    for error in plan.errors:
        click.echo(f"Failed: {error}", err=True)
    for message in report.errors:
        click.echo(f"Failed: {message}", err=True)


def _echo_prune(plan: Plan, report: WriteReport, *, dry_run: bool) -> None:
    """What a pruning import deleted (or would), and the kinds it could not prune."""
    from ops.crm_import import KIND_ORDER

    not_pruned = [kind for kind in KIND_ORDER if not plan.prunable(kind)]
    pruned = ", ".join(f"{kind} {item_id}" for kind, item_id in report.pruned) or "nothing"
    click.echo(f"{'Would prune' if dry_run else 'Pruned'}: {pruned}")
    if not_pruned:
        click.echo(
            f"Not pruned (a source model is missing from the dump or a record failed): "
            f"{', '.join(not_pruned)}"
        )


def _check_names() -> list[str]:
    from chalicelib.registry import CHECKS

    return list(CHECKS)


@cli.command("run")
@click.argument("check", type=click.Choice(_check_names()), metavar="CHECK")
@date_option(
    "Business date to run for, as if scheduled at 12:00 business time "
    "(default: now, with the business-hours window applied)."
)
@click.option("--dry-run", is_flag=True, help="Render and list what would be sent; change nothing.")
@click.option("--ignore-window", is_flag=True, help="Act even outside the business-hours window.")
@click.pass_obj
def run_command(
    options: Options, check: str, day: datetime | None, dry_run: bool, ignore_window: bool
) -> None:
    """Run CHECK now or for a business date and print its summary.

    CHECK is stale_applications, note_reminders or repayment_reminders. The exit
    code is 1 when a notice failed or is left for a retry.
    """
    from chalicelib.delivery import DeliveryIncomplete
    from chalicelib.runner import ManualRun, run_manual

    if dry_run:
        options.read_only()
    settings = bound_settings()
    request = ManualRun(
        check=check,
        day=day.date() if day else None,
        dry_run=dry_run,
        ignore_window=ignore_window,
    )
    incomplete = None
    try:
        summary = run_manual(request, now=datetime.now(UTC), settings=settings, emit_metrics=False)
    except DeliveryIncomplete as exc:
        summary, incomplete = exc.summary, exc
    click.echo(format_summary(summary))
    if options.aws is not None and not dry_run:
        _write_outbox(summary)
    if incomplete is not None:
        raise click.ClickException(str(incomplete))
    if summary.failed:
        raise click.ClickException(
            f"{summary.failed} notice(s) failed permanently; see `history` and `retry-failed`"
        )


def format_summary(summary: RunSummary) -> str:
    """A run summary for people: counts, invalid items, errors and (dry run) what would go."""
    head = f"{summary.check} for {summary.business_date}"
    if not summary.acted:
        return (
            f"{head}: outside the business-hours window, nothing done "
            "(use --ignore-window, or --date to run as of midday)"
        )
    lines = [f"{head}{' (dry run: nothing sent or written)' if summary.dry_run else ''}:"]
    rows = [
        ("items read", summary.items_read),
        ("notices due", summary.notices_due),
        ("would send" if summary.dry_run else "sent", _sent(summary)),
        ("skipped", summary.skipped),
        ("failed", summary.failed),
        ("retrying", summary.retrying),
        ("invalid", summary.invalid),
    ]
    lines += [f"  {label:<13}{value}" for label, value in rows]
    lines += [f"    invalid {i['item_id']}: {i['reason']}" for i in summary.invalid_items]
    lines += [f"    error: {error}" for error in summary.errors]
    for notice in summary.would_send:
        lines.append(
            f"  -> {notice['kind']} to {notice['recipient_name']} "
            f"<{notice['recipient_email']}>: {notice['subject']} "
            f"[{', '.join(notice['item_ids'])}]"
        )
    return "\n".join(lines)


def _sent(summary: RunSummary) -> str:
    if summary.dry_run:
        parts = sum(len(n["keys"]) for n in summary.would_send)
        return f"{parts} notice(s) in {len(summary.would_send)} email(s)"
    return f"{summary.sent} notice(s) in {summary.emails_sent} email(s)"


def _write_outbox(summary: RunSummary) -> None:
    from ops.demo import captured, write_outbox

    folder = OUTBOX / summary.business_date
    written = write_outbox(captured(), folder, [summary])
    click.echo(f"{len(written)} email(s) written to {folder}/ - open {folder}/index.html")


def _preview_kinds() -> list[str]:
    from ops.preview import KINDS

    return list(KINDS)


@cli.command()
@click.argument("kind", type=click.Choice(_preview_kinds()), metavar="KIND")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (default: preview-KIND.html); the text part goes beside it (.txt).",
)
def preview(kind: str, out: Path | None) -> None:
    """Render one email KIND with sample data to an HTML file and its text part (no AWS).

    KIND is a kind of notice, as the ledger and retry-failed name it:
    stale_applications, note_reminders, repayment_upcoming,
    repayment_overdue_3_day, repayment_overdue_7_day or repayment_overdue_10_day.
    """
    from ops.preview import sample

    email = sample(kind)
    path = out or Path(f"preview-{kind}.html")
    text = path.with_suffix(".txt") if path.suffix != ".txt" else path.with_name(f"{path.name}.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(email.html, encoding="utf-8")
    text.write_text(email.text, encoding="utf-8")
    click.echo(f"{path} and {text}: {email.subject!r} to {email.to.name} <{email.to.email}>")


@cli.command()
@click.option("--item", "item_id", default=None, help="A CRM item id (application, note, ...).")
@click.option("--recipient", "email", default=None, help="A recipient's email address (any case).")
@click.pass_obj
def history(options: Options, item_id: str | None, email: str | None) -> None:
    """Show the ledger for one CRM item or one recipient: what was sent, when, to whom.

    Times are in the business time zone. Each entry shows what SES reported
    about its message (delivered, bounced, complained, rejected); a recipient's
    history says whether the address is suppressed (not mailed again after a
    hard bounce or a complaint).
    """
    from chalicelib import ledger

    if (item_id is None) == (email is None):
        raise click.UsageError("give exactly one of --item ID or --recipient EMAIL")
    options.read_only()
    zone = bound_settings().timezone
    suppressed: list[models.Notification] = []
    if item_id is not None:
        what = f"item {item_id}"
        found = list(models.Notification.by_item.query(item_id))
    else:
        assert email is not None
        what = f"recipient {email}"
        # New entries are indexed by the lower-cased address; older ones as the CRM wrote it.
        forms = dict.fromkeys((email.strip(), ledger.address_key(email.strip())))
        unique = {e.id: e for form in forms for e in models.Notification.by_recipient.query(form)}
        found = sorted(unique.values(), key=lambda entry: (entry.created_at, entry.id))
        suppressed = list(models.Notification.batch_get([suppression.key(email)]))
    entries = [entry for entry in found if entry.kind != suppression.KIND]
    if not entries and not suppressed:
        click.echo(f"No notices in the ledger for {what}.")
        return
    click.echo(f"{len(entries)} notice(s) for {what}, oldest first:")
    for entry in entries:
        click.echo(format_entry(entry, zone))
    for entry in suppressed:
        click.echo(format_suppression(entry, zone))


def format_entry(entry: models.Notification, zone: tzinfo) -> str:
    """One ledger entry: when, status, kind, to whom, about what, and the outcome."""
    lines = [
        f"{_when(entry.created_at, zone)}  {entry.status:<8} {entry.kind} to "
        f"{entry.recipient_email} ({entry.recipient_id}), item {entry.item_id}, "
        f"business date {entry.business_date}",
        f"    key {entry.id}",
    ]
    if entry.subject:
        lines.append(f"    subject: {entry.subject}")
    if entry.sent_at is not None:
        lines.append(f"    sent {_when(entry.sent_at, zone)}, SES message id {entry.message_id}")
    if entry.failure_reason:
        lines.append(f"    failed: {entry.failure_reason}")
    elif entry.last_error:
        lines.append(f"    last error: {entry.last_error}")
    lines += _ses_lines(entry, zone)
    lines.append(f"    attempts {entry.attempts}, updated {_when(entry.updated_at, zone)}")
    return "\n".join(lines)


# SES's events in the order they happen to a message.
_SES_EVENT_ORDER = ("Send", "Reject", "DeliveryDelay", "Delivery", "Bounce", "Complaint")


def _ses_lines(entry: models.Notification, zone: tzinfo) -> list[str]:
    """What SES reported about the entry's message (chalicelib.ses_events)."""
    seen = set(entry.ses_events or ())
    if not seen:
        return []
    order = [e for e in _SES_EVENT_ORDER if e in seen] + sorted(seen - set(_SES_EVENT_ORDER))
    lines = [f"    SES events: {', '.join(order)}"]
    reported = (
        ("delivery delayed", entry.delayed_at, None),
        ("delivered", entry.delivered_at, None),
        ("bounced", entry.bounced_at, entry.bounce_type),
        ("complained (marked as spam)", entry.complained_at, None),
        ("rejected by SES", entry.rejected_at, entry.rejected_reason),
    )
    for label, moment, detail in reported:
        if moment is not None:
            lines.append(f"    {label} {_when(moment, zone)}" + (f": {detail}" if detail else ""))
    return lines


def format_suppression(entry: models.Notification, zone: tzinfo) -> str:
    """A suppressed address: why and since when it is not mailed, and what caused it."""
    reasons = {suppression.BOUNCE: "hard bounce", suppression.COMPLAINT: "complaint"}
    reason = reasons.get(str(entry.suppression_reason), str(entry.suppression_reason))
    since = _when(entry.suppressed_at, zone) if entry.suppressed_at is not None else "unknown"
    lines = [
        f"{entry.recipient_email} is suppressed ({reason}) since {since}: not mailed again "
        "until the CRM changes the address",
    ]
    if entry.suppressed_by:
        lines.append(f"    after {entry.suppressed_by}, SES message id {entry.message_id}")
    return "\n".join(lines)


def _when(moment: datetime, zone: tzinfo) -> str:
    """A moment in the business time zone, with the zone's abbreviation (AEDT, AEST)."""
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def _notice_kinds() -> list[str]:
    from chalicelib.registry import KINDS

    return list(KINDS)


def failed_filters(command: FC) -> FC:
    """``--kind K`` (repeatable) and ``--item ID``: which failed notices a command takes."""
    command = click.option(
        "--item", "item_id", default=None, help="Only notices about this CRM item."
    )(command)
    return click.option(
        "--kind",
        "kinds",
        multiple=True,
        type=click.Choice(_notice_kinds()),
        help="Only notices of this kind (repeatable).",
    )(command)


def format_failed(entry: models.Notification, zone: tzinfo) -> str:
    """A failed notice: when it failed, its kind, item, recipient and the reason."""
    when = _when(entry.failed_at, zone) if entry.failed_at is not None else "unknown"
    return (
        f"{when}  {entry.kind}  item {entry.item_id}  to {entry.recipient_email} "
        f"({entry.recipient_id}): {entry.failure_reason or 'no reason recorded'}\n"
        f"    key {entry.id}"
    )


@cli.command()
@failed_filters
@click.pass_obj
def failed(options: Options, kinds: tuple[str, ...], item_id: str | None) -> None:
    """List the notices that failed permanently: kind, item, recipient, reason and when.

    Reads the ledger's sparse index of failed notices (a Query, no Scan), oldest
    failure first; times are in the business time zone. `retry-failed` re-queues them.
    """
    from chalicelib import ledger

    options.read_only()
    zone = bound_settings().timezone
    entries = list(ledger.failed_entries(kinds, item_id))
    if not entries:
        click.echo("No failed notices.")
        return
    click.echo(f"{len(entries)} failed notice(s), oldest failure first:")
    for entry in entries:
        click.echo(format_failed(entry, zone))


@cli.command("retry-failed")
@failed_filters
@click.option("--dry-run", is_flag=True, help="List what would be re-queued; change nothing.")
@click.pass_obj
def retry_failed(
    options: Options, kinds: tuple[str, ...], item_id: str | None, dry_run: bool
) -> None:
    """Re-queue permanently failed notices (after fixing the cause) for the next run.

    A re-queued notice goes out on the next run that still finds it due.
    Entries failed as "interrupted after claiming" may already have been
    delivered: re-queueing those can send a duplicate.
    """
    from chalicelib import ledger
    from chalicelib.checks import note_reminders

    if dry_run:
        options.read_only()
    bound_settings()
    now = datetime.now(UTC)
    requeued = 0
    for entry in ledger.failed_entries(kinds, item_id):
        reason = entry.failure_reason
        line = f"{entry.id} ({entry.kind} to {entry.recipient_email}): {reason}"
        if dry_run:
            requeued += 1
            click.echo(f"would re-queue {line}")
        elif ledger.requeue(entry, now):
            requeued += 1
            if entry.kind == note_reminders.NOTE_REMINDER.name:
                # Its note may be recorded as settled: the next run must read it again.
                note_reminders.forget_settled(entry.id)
            click.echo(f"re-queued {line}")
    if dry_run:
        click.echo(f"Would re-queue {requeued} failed notice(s) (dry run: nothing changed).")
        return
    click.echo(
        f"Re-queued {requeued} failed notice(s); the next run that finds them due sends them."
    )


@cli.command("report")
@click.option(
    "--from",
    "start",
    type=DAY,
    default=None,
    metavar="YYYY-MM-DD",
    help="First business date (default: 29 days before --to).",
)
@click.option(
    "--to",
    "end",
    type=DAY,
    default=None,
    metavar="YYYY-MM-DD",
    help="Last business date (default: today in the business time zone).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="HTML file to write.",
)
def report(start: datetime | None, end: datetime | None, out: Path) -> None:
    """Write one HTML page of the ledger for a range of business dates (opens offline).

    Notices per day by kind (a stacked bar chart); sent, failed, deferred, bounced and
    complained per check; the top failure reasons; the recipients with repeated
    failures. Read with one Query per day of the ledger's business-date index.
    """
    from ops import report as ledger_report

    settings = bound_settings()
    now = datetime.now(settings.timezone)
    last = end.date() if end else now.date()
    first = start.date() if start else ledger_report.default_range(last)[0]
    try:
        written = ledger_report.write_report(out, first, last, now)
    except ledger_report.ReportError as exc:
        raise click.UsageError(str(exc)) from exc
    total = written.total
    click.echo(
        f"{out}: {total.notices} notice(s) from {first.isoformat()} to {last.isoformat()} "
        f"({total.sent} sent, {total.failed} failed, {total.deferred} deferred, "
        f"{total.bounced} bounced, {total.complained} complained)"
    )
    for skipped in written.skipped:
        click.echo(f"skipped {skipped.key}: {skipped.reason}", err=True)


# ---- infrastructure: the IAM policy files and the merge template (make policy/package) ----


def _stages(ctx: click.Context, *, required: bool) -> list[str]:
    """The stage given with --stage; without one, every stage (or a usage error if required)."""
    stage = ctx.find_root().params.get("stage")
    if stage:
        return [str(stage)]
    if required:
        raise click.UsageError(f"{ctx.info_name} needs --stage")
    return stage_names()


def _load_stage(stage: str) -> Stage:
    """The stage as the generators need it, or a one-line error naming it."""
    from ops import infra

    try:
        return infra.load_stage(stage)
    except (StageError, infra.InfraError, ConfigError) as exc:
        raise click.ClickException(f"stage {stage}: {exc}") from exc


@cli.command()
@click.option("--check", is_flag=True, help="Only compare; exit 1 if a file is out of date.")
@click.pass_context
def policy(ctx: click.Context, check: bool) -> None:
    """Write .chalice/policy-<stage>.json and the fan-out consumer's (every stage, or --stage)."""
    from ops import infra

    stale = []
    for name in _stages(ctx, required=False):
        stage = _load_stage(name)
        for path, document in (
            (stage.policy_file, infra.stage_policy(stage)),
            (stage.consumer_policy_file, infra.consumer_policy(stage)),
        ):
            if _write_policy(path, infra.render_json(document), check=check):
                stale.append(path.name)
    if stale:
        raise click.ClickException(
            f"{', '.join(stale)} differ from the models and .chalice/config.json; "
            "run `make policy` and review the change"
        )


def _write_policy(path: Path, text: str, *, check: bool) -> bool:
    """Write (or with ``check`` compare) one policy file; True when it is out of date."""
    current = path.read_text() if path.exists() else None
    if current == text:
        click.echo(f"{path.name}: up to date")
        return False
    if check:
        click.echo(f"{path.name}: out of date", err=True)
        return True
    path.write_text(text)
    click.echo(f"{path.name}: written")
    return False


@cli.command()
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the template for `chalice package --merge-template`.",
)
@click.pass_context
def template(ctx: click.Context, output: Path) -> None:
    """Write the stage's tables, invoke configs, dead-letter queue and alarms (JSON)."""
    from ops import infra

    stage = _load_stage(_stages(ctx, required=True)[0])
    document = infra.merge_template(stage, infra.app_functions(infra.load_app()))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(infra.render_json(document))
    click.echo(f"{output}: {len(document['Resources'])} resources for stage {stage.name}")


if __name__ == "__main__":
    cli()
