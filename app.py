"""Chalice app: wires EventBridge schedules, SES events and manual invocation to ``chalicelib``."""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools.utilities.typing import LambdaContext
from chalice.app import Chalice, CloudWatchEvent, Cron, SQSEvent

from chalicelib import fanout, runner, ses_events
from chalicelib.registry import NOTE_REMINDERS, REPAYMENT_REMINDERS, STALE_APPLICATIONS
from chalicelib.runner import SCHEDULED_PREFIX, handle_manual, handle_scheduled

app = Chalice(app_name="loan-reminders")
# Lambda's init phase: the AWS clients are made once here, before the first invocation.
runner.prepare()

# EventBridge schedules run in UTC; each check fires at the top of every hour and
# acts only inside its business-time window (see chalicelib.config.Windows).
HOURLY = Cron(0, "*", "*", "*", "?", "*")


def _context(event: CloudWatchEvent) -> LambdaContext | None:
    # Chalice annotates an event's context as a dict; Lambda hands over its context object.
    return cast("LambdaContext | None", event.context)


# Check names are written once, in chalicelib.registry; each function imports its own
# check's module in the init phase (runner.prepare finds it from Lambda's _HANDLER).
@app.schedule(
    HOURLY,
    name=f"{SCHEDULED_PREFIX}{STALE_APPLICATIONS}",
    description="Alert BDMs of applications stuck in one stage",
)
def check_stale_applications(event: CloudWatchEvent) -> dict[str, Any]:
    return handle_scheduled(STALE_APPLICATIONS, event.to_dict(), _context(event))


@app.schedule(
    HOURLY,
    name=f"{SCHEDULED_PREFIX}{NOTE_REMINDERS}",
    description="Remind note authors and BDMs on the note's remind date",
)
def check_note_reminders(event: CloudWatchEvent) -> dict[str, Any]:
    return handle_scheduled(NOTE_REMINDERS, event.to_dict(), _context(event))


@app.schedule(
    HOURLY,
    name=f"{SCHEDULED_PREFIX}{REPAYMENT_REMINDERS}",
    description="Remind borrowers of due and overdue repayments; escalate to BDMs",
)
def check_repayment_reminders(event: CloudWatchEvent) -> dict[str, Any]:
    return handle_scheduled(REPAYMENT_REMINDERS, event.to_dict(), _context(event))


@app.lambda_function(name="run_check")
def run_check(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Run one check by hand: ``{"check", "date"?, "dry_run"?, "ignore_window"?}``."""
    return handle_manual(event, getattr(context, "aws_request_id", None))


# SES publishes the events of the stage's configuration set to the default bus; another
# stage's events are ignored by their configuration set.
@app.on_cw_event(ses_events.EVENT_PATTERN, name="record_ses_events")
def record_ses_events(event: CloudWatchEvent) -> dict[str, Any]:
    """Record one SES event (Send, Delivery, Bounce, ...) on the ledger entries of its message."""
    return ses_events.handle(event.to_dict())


# A run with more due notices than fit its time hands the rest to the fan-out queue; this
# delivers them through the same ledger. The template (ops/infra.py) points the event
# source at the stage's queue and turns on partial batch responses, which this returns.
@app.on_sqs_message(
    queue=fanout.queue_name(),
    batch_size=fanout.BATCH_SIZE,
    maximum_concurrency=fanout.MAX_CONCURRENCY,
    name="deliver_fanout",
)
def deliver_fanout(event: SQSEvent) -> dict[str, Any]:
    """Deliver the notices of fan-out messages; return the records to receive again."""
    context = cast("LambdaContext | None", event.context)
    remaining = context.get_remaining_time_in_millis if context is not None else None
    return fanout.handle(event.to_dict(), remaining)
