"""Stale applications: a digest to each BDM of applications stuck in one stage.

An application is stale once its (non-terminal) stage has not changed for
``stale_after_days``; it is alerted once per ``stale_repeat_days`` cycle after
that, and a stage change (a new ``stage_last_updated``) restarts the clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from chalicelib import ledger, registry, schedule
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
    """Alert each BDM of their newly due stale applications, then schedule the next looks."""
    plan = collect(run)
    outcome = deliver(run, plan.notices)
    if not run.dry_run:
        _follow_up(run, plan, outcome)


@dataclass(frozen=True)
class Look:
    """What a run found about one application, for the schedule.

    ``scheduled``: it was read because the schedule had it due, so it stays due
    without a write. ``next_due``: when to look at it again (for a stale one, once
    its alert, ``key``, is sent; until then it stays due). ``due_today``: unusable,
    so it is read again at every run, as every run used to. Neither: it leaves the
    schedule (a terminal stage, or gone from the CRM).
    """

    app_id: str
    scheduled: bool
    next_due: date | None = None
    stale: bool = False
    due_today: bool = False
    key: str | None = None


@dataclass
class Plan:
    """A run's digests, what it decided about each application it read, and its sweep."""

    notices: list[Notice[StaleRow]]
    looks: list[Look]
    sweep: schedule.Sweep | None


def collect(run: Run) -> Plan:
    """One digest per BDM of their applications unchanged long enough to alert.

    The applications read are the newly stale ones (a sweep of the stage index from
    where the last day's sweep stopped) and the ones the schedule has due today; an
    application alerted in this cycle is not read again until its next cycle.
    """
    discovered, sweep = _discover(run)
    scheduled = schedule.due(NAME, run.today)
    found = {app.id: app for app in discovered}
    fetched = run.fetch(Application, (i for i in scheduled if i not in found))
    run.summary.items_read += len(fetched)
    looks: list[Look] = []
    due: list[Stale] = []
    for app_id in dict.fromkeys([*found, *scheduled]):
        app = found.get(app_id) or fetched.get(app_id)
        look, stale = _look(run, app_id, app, scheduled=app_id not in found)
        if look is not None:
            looks.append(look)
        if stale is not None:
            due.append(stale)
    bdms = run.fetch(Staff, (stale.app.bd_id for stale in due))
    parts_by_bdm: dict[Recipient, list[Part[StaleRow]]] = defaultdict(list)
    keys: dict[str, str] = {}
    for stale in due:
        part = _part(run, stale, bdms)
        if part is not None:
            parts_by_bdm[part[0]].append(part[1])
            keys[stale.app.id] = part[1].key
    notices = [
        Notice(kind=STALE_DIGEST.name, recipient=bdm, parts=parts, compose=_composer(bdm, run))
        for bdm, parts in parts_by_bdm.items()
    ]
    looks = [replace(look, key=keys.get(look.app_id)) for look in looks]
    return Plan(notices, looks, sweep)


def _part(
    run: Run, stale: Stale, bdms: dict[str, Staff]
) -> tuple[Recipient, Part[StaleRow]] | None:
    app = stale.app
    row = _row(run, app, stale.days)
    if row is None:
        return None
    if not app.bd_id:
        run.invalid(app.id, "bd_id is missing")
        return None
    bdm = run.recipient(bdms.get(app.bd_id), "BDM", app.bd_id, for_item=app.id)
    if bdm is None:
        return None
    key = STALE_DIGEST.key(app.id, app.stage, app.stage_last_updated, stale.cycle)
    part = run.part(key, app.id, row)
    return None if part is None else (bdm, part)


@dataclass(frozen=True)
class Stale:
    """An application stale for ``days``, in its ``cycle``-th alert period (0 first)."""

    app: Application
    days: int
    cycle: int


def _discover(run: Run) -> tuple[list[Application], schedule.Sweep | None]:
    """The applications the stage index holds below the stale bound and above the last sweep.

    Once a day: a run on a date already swept reads nothing here (the schedule has
    what is due). ISO strings with different UTC offsets do not sort exactly by
    instant; two days of slack above covers every offset and the exact test happens
    in Python. Below ``today - stale_after_days`` every application is stale whatever
    its offset, so that is where the next day's sweep starts.
    """
    t = run.settings.thresholds
    last = schedule.last_sweep(NAME)
    if last is not None and last.swept_on == run.today:
        return [], None
    upper = (run.today - timedelta(days=t.stale_after_days - 2)).isoformat()
    # A run for an earlier date than the last sweep (by hand) looks at everything.
    lower = last.below if last is not None and last.swept_on < run.today else None
    sweep = None
    if last is None or last.swept_on < run.today:
        sweep = schedule.Sweep(
            run.today, (run.today - timedelta(days=t.stale_after_days)).isoformat()
        )
    if lower is not None and lower >= upper:
        return [], sweep
    found: list[Application] = []
    for stage in ACTIVE_STAGES:
        condition = (
            Application.stage_last_updated < upper
            if lower is None
            else Application.stage_last_updated.between(lower, upper)
        )
        for app in Application.by_stage.query(stage, condition):
            # BETWEEN includes its upper bound; the stale bound excludes it.
            if app.stage_last_updated is not None and app.stage_last_updated >= upper:
                continue
            run.summary.items_read += 1
            found.append(app)
    return found, sweep


def _look(
    run: Run, app_id: str, app: Application | None, *, scheduled: bool
) -> tuple[Look | None, Stale | None]:
    """Decide one application: stale (with its next look), not yet, unusable or gone."""
    t = run.settings.thresholds
    if app is None or (
        not app.load_error and (app.stage not in ACTIVE_STAGES or not app.stage_last_updated)
    ):
        # Gone from the CRM, or a stage the check does not alert (terminal): off the schedule.
        return (Look(app_id, scheduled) if scheduled else None), None
    local_day = _changed_on(run, app)
    if local_day is None:
        # Reported; looked at again at every run, as before, until the CRM fixes it.
        return Look(app_id, scheduled, due_today=True), None
    days = (run.today - local_day).days
    if days < t.stale_after_days:
        becomes_stale = local_day + timedelta(days=t.stale_after_days)
        return (Look(app_id, scheduled, next_due=becomes_stale) if scheduled else None), None
    cycle = (days - t.stale_after_days) // t.stale_repeat_days
    next_cycle = local_day + timedelta(days=t.stale_after_days + t.stale_repeat_days * (cycle + 1))
    return Look(app_id, scheduled, next_due=next_cycle, stale=True), Stale(app, days, cycle)


def _follow_up(run: Run, plan: Plan, outcome: dict[str, str]) -> None:
    """Write when each application read is next due, then record the day's sweep.

    An alert that went out moves its application to its next cycle; one that did
    not (held, failed, left for a retry, or unusable) keeps it due, so the next run
    reads it again as every run used to. The sweep is recorded last: a run that
    dies before it leaves the day to be swept again, which only re-reads.
    """
    for look in plan.looks:
        if not schedule.fits(NAME, look.app_id):
            continue  # an id over the key limit: reported when its part was made
        if look.stale:
            if look.key is not None and outcome.get(look.key) == ledger.SENT:
                schedule.reschedule(NAME, look.app_id, look.next_due or run.today)
            elif not look.scheduled:
                schedule.reschedule(NAME, look.app_id, run.today)
        elif look.due_today:
            if not look.scheduled:
                schedule.reschedule(NAME, look.app_id, run.today)
        elif look.next_due is not None:
            schedule.reschedule(NAME, look.app_id, look.next_due)
        else:
            schedule.unschedule(NAME, look.app_id)
    if plan.sweep is not None:
        schedule.record_sweep(NAME, plan.sweep)


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
    lender = run.settings.lender

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
            lender=lender,
        )

    return compose


CHECK = Check(NAME, run, "stale_applications_start", (STALE_DIGEST,))
