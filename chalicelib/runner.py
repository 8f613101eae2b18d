"""Run a check for a moment in time: the business-hours gate, the run, its summary."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, time
from typing import Any

from chalicelib import models
from chalicelib.checks import note_reminders, repayment_reminders, stale_applications
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete, Run, RunSummary
from chalicelib.mailer import Mailer
from chalicelib.observability import logger

CHECKS: dict[str, Callable[[Run], None]] = {
    "stale_applications": stale_applications.run,
    "note_reminders": note_reminders.run,
    "repayment_reminders": repayment_reminders.run,
}


def in_window(local: datetime, start: time, end: time) -> bool:
    """True when the local wall-clock time is within ``[start, end)``."""
    return start <= local.time().replace(tzinfo=None) < end


def run_check(
    check: str,
    *,
    at: datetime,
    now: datetime,
    settings: Settings | None = None,
    mailer: Mailer | None = None,
    ignore_window: bool = False,
) -> RunSummary:
    """Run ``check`` as scheduled at ``at`` (its business date), with ``now`` as the clock.

    Raises :class:`DeliveryIncomplete` after trying every notice if any failed
    transiently, so that Lambda records an error and the retry/alarms fire.
    """
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; expected one of {', '.join(CHECKS)}")
    if at.tzinfo is None or now.tzinfo is None:
        raise ValueError("'at' and 'now' must be timezone-aware")
    settings = settings or Settings.from_env()
    local = at.astimezone(settings.timezone)
    summary = RunSummary(
        check=check, business_date=local.date().isoformat(), run_id=uuid.uuid4().hex
    )
    start = settings.windows.start_for(check)
    if not ignore_window and not in_window(local, start, settings.windows.end):
        summary.acted = False
        logger.info(
            "outside business hours, nothing to do",
            extra={
                "check": check,
                "local_time": local.isoformat(),
                "window": f"{start:%H:%M}-{settings.windows.end:%H:%M}",
            },
        )
        return summary

    models.bind(settings)
    run = Run(
        settings=settings,
        mailer=mailer or Mailer(settings.sender_email, settings.region),
        run_id=summary.run_id,
        now=now.astimezone(UTC),
        today=local.date(),
        summary=summary,
    )
    CHECKS[check](run)
    logger.info("run summary", extra={"summary": summary.as_dict()})
    if summary.retrying:
        raise DeliveryIncomplete(summary)
    return summary


def event_time(event: Mapping[str, Any]) -> datetime:
    """The scheduled time of an EventBridge event (its ``time`` field, UTC)."""
    raw = event.get("time")
    if not isinstance(raw, str):
        raise ValueError("scheduled event has no 'time' field")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"scheduled event time {raw!r} is not ISO-8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def handle_scheduled(check: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """Entry point for the scheduled Lambda functions: run ``check`` for the event's time."""
    return run_check(check, at=event_time(event), now=datetime.now(UTC)).as_dict()
