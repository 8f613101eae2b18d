"""Stale applications: a digest to each BDM of applications stuck in one stage.

An application is stale once its (non-terminal) stage has not changed for
``stale_after_days``; it is alerted once per ``stale_repeat_days`` cycle after
that, and a stage change (a new ``stage_last_updated``) restarts the clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from chalicelib import registry
from chalicelib.checks import Check, Kind
from chalicelib.delivery import Notice, deliver
from chalicelib.formatting import (
    ACTIVE_STAGES,
    STAGE_LABELS,
    money,
    parse_amount,
    parse_timestamp,
)
from chalicelib.limits import quoted
from chalicelib.mailer import Email, Recipient, render
from chalicelib.models import Application, Staff
from chalicelib.run import Part, Run

NAME = registry.declared_in(__name__)

STALE_DIGEST = Kind(
    "stale_applications",
    NAME,
    "stale_applications",
    ("application_id", "stage", "stage_last_updated", "cycle"),
)


@dataclass(frozen=True)
class StaleRow:
    """One line of a BDM's digest, formatted for display."""

    reference: str
    stage: str
    days_in_stage: int
    loan_amount: str
    broker: str


def run(run: Run) -> None:
    """Alert each BDM of their newly due stale applications."""
    deliver(run, collect(run))


def collect(run: Run) -> list[Notice[StaleRow]]:
    """One digest per BDM of their applications unchanged long enough to alert."""
    due = _stale(run)
    bdms = run.fetch(Staff, (stale.app.bd_id for stale in due))
    parts_by_bdm: dict[Recipient, list[Part[StaleRow]]] = defaultdict(list)
    for stale in due:
        app = stale.app
        row = _row(run, app, stale.days)
        if row is None:
            continue
        if not app.bd_id:
            run.invalid(app.id, "bd_id is missing")
            continue
        bdm = run.recipient(bdms.get(app.bd_id), "BDM", app.bd_id, for_item=app.id)
        if bdm is None:
            continue
        key = STALE_DIGEST.key(app.id, app.stage, app.stage_last_updated, stale.cycle)
        part = run.part(key, app.id, row)
        if part is not None:
            parts_by_bdm[bdm].append(part)
    return [
        Notice(kind=STALE_DIGEST.name, recipient=bdm, parts=parts, compose=_composer(bdm, run))
        for bdm, parts in parts_by_bdm.items()
    ]


@dataclass(frozen=True)
class Stale:
    """An application stale for ``days``, in its ``cycle``-th alert period (0 first)."""

    app: Application
    days: int
    cycle: int


def _stale(run: Run) -> list[Stale]:
    """Query every active stage for applications unchanged long enough to alert."""
    t = run.settings.thresholds
    # ISO strings with different UTC offsets do not sort exactly by instant; two
    # days of slack covers every offset and the exact test happens in Python.
    upper = (run.today - timedelta(days=t.stale_after_days - 2)).isoformat()
    due: list[Stale] = []
    for stage in ACTIVE_STAGES:
        for app in Application.by_stage.query(stage, Application.stage_last_updated < upper):
            run.summary.items_read += 1
            local_day = _changed_on(run, app)
            if local_day is None:
                continue
            days = (run.today - local_day).days
            if days >= t.stale_after_days:
                due.append(Stale(app, days, (days - t.stale_after_days) // t.stale_repeat_days))
    return due


def _changed_on(run: Run, app: Application) -> date | None:
    """The business date of the application's last stage change; None (reported) if unusable."""
    if app.load_error:
        run.invalid(app.id, app.load_error)
        return None
    try:
        changed = parse_timestamp(app.stage_last_updated, "stage_last_updated")
        return changed.astimezone(run.settings.timezone).date()
    except ValueError as exc:
        run.invalid(app.id, str(exc))
    except OverflowError:
        # Year 1 or 9999 with an offset has no local date.
        run.invalid(app.id, f"stage_last_updated {quoted(app.stage_last_updated)} is out of range")
    return None


def _row(run: Run, app: Application, days: int) -> StaleRow | None:
    """The application's row in its BDM's digest; ``None`` (reported) when it has none."""
    if not app.reference_number:
        run.invalid(app.id, "reference_number is missing")
        return None
    loan_amount = "Not recorded"
    if app.loan_amount is not None:
        try:
            loan_amount = money(parse_amount(app.loan_amount, "loan_amount"))
        except ValueError as exc:
            run.invalid(app.id, str(exc))
            return None
    return StaleRow(
        reference=app.reference_number,
        # Only ACTIVE_STAGES are queried, and each of them has a label.
        stage=STAGE_LABELS[str(app.stage)],
        days_in_stage=days,
        loan_amount=loan_amount,
        broker=app.broker_name or "—",
    )


def _composer(bdm: Recipient, run: Run) -> Callable[[Sequence[Part[StaleRow]]], Email]:
    threshold = run.settings.thresholds.stale_after_days

    def compose(parts: Sequence[Part[StaleRow]]) -> Email:
        rows = sorted((p.data for p in parts), key=lambda r: (-r.days_in_stage, r.reference))
        subject = (
            f"Stale Application Alert: {rows[0].reference}"
            if len(rows) == 1
            else f"Stale Application Alert: {len(rows)} applications"
        )
        return render(
            STALE_DIGEST.template,
            bdm,
            subject,
            {"applications": rows, "threshold_days": threshold},
        )

    return compose


CHECK = Check(NAME, run, "stale_applications_start", (STALE_DIGEST,))
