"""Run a check for a moment in time: the business-hours gate, the run, its summary.

Scheduled runs take their moment from the EventBridge event; manual runs (the
``run_check`` function and ``python -m ops.cli run``) from a business date.
"""

from __future__ import annotations

import os
import re
import time as clock
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from chalicelib import fanout, models, registry
from chalicelib.config import ConfigError, Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.mailer import Mailer, ses_client
from chalicelib.observability import logger, publish_run, run_metrics
from chalicelib.run import Run, RunSummary

# A manual run for a business date runs as if scheduled at midday, inside every window.
MANUAL_RUN_TIME = time(12, 0)
# A scheduled function is named, in app.py and in Lambda, after the check it runs.
SCHEDULED_PREFIX = "check_"


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
    dry_run: bool = False,
    emit_metrics: bool = True,
    remaining_ms: Callable[[], int] | None = None,
) -> RunSummary:
    """Run ``check`` as scheduled at ``at`` (its business date), with ``now`` as the clock.

    Raises :class:`DeliveryIncomplete` after trying every notice if any failed
    transiently, so that Lambda records an error and the retry/alarms fire.
    A ``dry_run`` renders what would be sent into ``summary.would_send`` and
    changes nothing. A run that acts (not a dry run) prints one EMF metrics
    document when it ends, also when it raises. ``remaining_ms`` (the Lambda
    context's clock) makes the run stop claiming before its time runs out.
    """
    _check_inputs(check, at, now)
    settings = settings or Settings.from_env()
    local = at.astimezone(settings.timezone)
    summary = RunSummary(
        check=check,
        business_date=local.date().isoformat(),
        run_id=uuid.uuid4().hex,
        dry_run=dry_run,
    )
    if not ignore_window and not _in_business_hours(check, local, settings):
        summary.acted = False
        return summary
    with _metered(summary, enabled=emit_metrics and not dry_run):
        models.bind(settings)
        run = Run(
            settings=settings,
            mailer=mailer or _mailer(settings),
            run_id=summary.run_id,
            now=now.astimezone(UTC),
            today=local.date(),
            summary=summary,
            dry_run=dry_run,
            remaining_ms=remaining_ms,
            # Only a run with a deadline (Lambda's) hands notices on; by hand, it sends all.
            fan_out=None if remaining_ms is None else fanout.FanOut.configured(settings.region),
        )
        registry.check(check).run(run)
        logger.info("run summary", extra={"summary": summary.for_log()})
    if summary.retrying:
        raise DeliveryIncomplete(summary)
    return summary


def _check_inputs(check: str, at: datetime, now: datetime) -> None:
    registry.check(check)
    if at.tzinfo is None or now.tzinfo is None:
        raise ValueError("'at' and 'now' must be timezone-aware")


def _in_business_hours(check: str, local: datetime, settings: Settings) -> bool:
    """The business-hours gate: False (logged) outside ``check``'s window."""
    start = getattr(settings.windows, registry.check(check).window_start)
    end = settings.windows.end
    if in_window(local, start, end):
        return True
    logger.info(
        "outside business hours, nothing to do",
        extra={
            "check": check,
            "local_time": local.isoformat(),
            "window": f"{start:%H:%M}-{end:%H:%M}",
        },
    )
    return False


def prepare(environ: Mapping[str, str] | None = None) -> None:
    """The init phase: make the container's SES and DynamoDB clients before any invocation.

    Lambda runs this once per container, when app.py is imported, so the first
    invocation reuses the clients as every warm one does; a scheduled function also
    imports its own check here (:func:`scheduled_check`) and primes the DynamoDB client
    with the reads every run opens with (:func:`models.prime`). Without the functions'
    settings (Chalice's CLI imports app.py to package or deploy it) nothing is made
    and each client is made on first use instead.
    """
    try:
        settings = Settings.from_env(environ)
    except ConfigError:
        return
    ses_client(settings.region, settings.send.send_concurrency)
    models.bind(settings)
    fanout.FanOut.configured(settings.region, environ)
    check = scheduled_check((os.environ if environ is None else environ).get("_HANDLER", ""))
    if check is not None:
        registry.check(check)
        models.prime()


def scheduled_check(handler: str) -> str | None:
    """The check a scheduled function runs, from its handler (``app.check_<name>``).

    Lambda names the function's handler in ``_HANDLER``: the init phase imports that
    function's own check, so its first invocation does not. Other functions load none.
    """
    name = handler.rpartition(".")[2].removeprefix(SCHEDULED_PREFIX)
    return name if handler.startswith("app.") and name in registry.NAMES else None


def _mailer(settings: Settings) -> Mailer:
    return Mailer(
        settings.sender_email,
        settings.region,
        configuration_set=settings.ses_configuration_set,
        lender=settings.lender,
        connections=settings.send.send_concurrency,
    )


@contextmanager
def _metered(summary: RunSummary, *, enabled: bool) -> Iterator[None]:
    """Publish the run's counts and duration as one EMF document when it ends, also on error."""
    started = clock.perf_counter()
    try:
        yield
    finally:
        if enabled:
            publish_run(
                run_metrics(summary.check),
                items_read=summary.items_read,
                sent=summary.sent,
                failed=summary.failed,
                retrying=summary.retrying,
                unknown=summary.unknown,
                deferred=summary.deferred,
                suppressed=summary.suppressed,
                invalid=summary.invalid,
                duration_ms=round((clock.perf_counter() - started) * 1000, 1),
            )


def event_time(event: Mapping[str, object]) -> datetime:
    """The scheduled time of an EventBridge event (its ``time`` field, UTC)."""
    raw = event.get("time")
    if not isinstance(raw, str):
        raise ValueError("scheduled event has no 'time' field")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"scheduled event time {raw!r} is not ISO-8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class EventTooOld(ValueError):
    """A scheduled event older than its retry horizon (a replay): refused, nothing sent."""


def handle_scheduled(
    check: str,
    event: Mapping[str, object],
    context: LambdaContext | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Entry point for the scheduled Lambda functions: run ``check`` for the event's time.

    An event older than ``EVENT_MAX_AGE_HOURS`` is refused with :class:`EventTooOld`:
    re-driven days later (from the dead-letter queue, say) it would act on a stale
    business date. A run for a chosen date is what ``run_check`` is for.
    """
    event_id = event.get("id")
    logger.set_correlation_id(event_id if isinstance(event_id, str) else None)
    now = now or datetime.now(UTC)
    at = event_time(event)
    settings = Settings.from_env()
    horizon = timedelta(hours=settings.reliability.event_max_age_hours)
    if now - at > horizon:
        raise EventTooOld(
            f"scheduled event {event_id!r} of {at.isoformat()} is older than "
            f"EVENT_MAX_AGE_HOURS ({settings.reliability.event_max_age_hours} h); refused. "
            "To run a check for that date, invoke run_check with its date."
        )
    remaining = context.get_remaining_time_in_millis if context is not None else None
    return run_check(check, at=at, now=now, settings=settings, remaining_ms=remaining).as_dict()


class InvalidRequest(ValueError):
    """A manual run was asked for with a payload or arguments that make no sense."""


@dataclass(frozen=True)
class ManualRun:
    """A run of one check asked for by an operator, for a business date or for now."""

    check: str
    day: date | None = None
    dry_run: bool = False
    ignore_window: bool = False


_MANUAL_FIELDS = ("check", "date", "dry_run", "ignore_window")


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(value: object) -> date:
    """A business date given as ``YYYY-MM-DD``, or :class:`InvalidRequest`."""
    if isinstance(value, str) and _DAY.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidRequest(f"date {value!r} is not a YYYY-MM-DD date")


def parse_request(event: object) -> ManualRun:
    """Validate a ``run_check`` payload: ``{"check", "date"?, "dry_run"?, "ignore_window"?}``."""
    if not isinstance(event, Mapping):
        raise InvalidRequest(
            f'the payload must be a JSON object like {{"check": "{registry.NAMES[0]}", '
            f'"date": "2026-11-23", "dry_run": true}}, got {type(event).__name__}'
        )
    unknown = sorted(str(k) for k in event if k not in _MANUAL_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(_MANUAL_FIELDS)}"
        )
    check = event.get("check")
    if check not in registry.NAMES:
        raise InvalidRequest(
            f"unknown check {check!r}; expected one of {', '.join(registry.NAMES)}"
        )
    raw_date = event.get("date")
    day = None if raw_date is None else parse_day(raw_date)
    flags = {}
    for name in ("dry_run", "ignore_window"):
        value = event.get(name, False)
        if not isinstance(value, bool):
            raise InvalidRequest(f"{name} must be true or false, got {value!r}")
        flags[name] = value
    return ManualRun(check=str(check), day=day, **flags)


def manual_time(request: ManualRun, settings: Settings, now: datetime) -> datetime:
    """When a manual run happens: midday on its business date, or ``now`` without one.

    A date after today (in the business time zone) is refused unless it is a dry
    run: sending early would use up notices the scheduled runs are meant to send.
    """
    if request.day is None:
        return now
    today = now.astimezone(settings.timezone).date()
    if request.day > today and not request.dry_run:
        raise InvalidRequest(
            f"date {request.day.isoformat()} is in the future (today is {today.isoformat()} "
            f"in {settings.timezone.key}); only a dry run can look ahead"
        )
    return datetime.combine(request.day, MANUAL_RUN_TIME, settings.timezone)


def run_manual(
    request: ManualRun,
    *,
    now: datetime,
    settings: Settings | None = None,
    mailer: Mailer | None = None,
    emit_metrics: bool = True,
) -> RunSummary:
    """Run a check an operator asked for (see :func:`manual_time` for its moment)."""
    settings = settings or Settings.from_env()
    return run_check(
        request.check,
        at=manual_time(request, settings, now),
        now=now,
        settings=settings,
        mailer=mailer,
        ignore_window=request.ignore_window,
        dry_run=request.dry_run,
        emit_metrics=emit_metrics,
    )


def handle_manual(event: object, request_id: str | None) -> dict[str, Any]:
    """Entry point for the ``run_check`` Lambda function (``chalice invoke -n run_check``)."""
    logger.set_correlation_id(request_id)
    request = parse_request(event)
    logger.info(
        "manual run requested",
        extra={
            "check": request.check,
            "date": request.day.isoformat() if request.day else None,
            "dry_run": request.dry_run,
            "ignore_window": request.ignore_window,
        },
    )
    return run_manual(request, now=datetime.now(UTC)).as_dict()
