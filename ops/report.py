"""``python -m ops.cli report``: one self-contained HTML page of the ledger, for operators.

For a range of business dates it reads the ledger's notices from the sparse
``business_date-created_at-index`` (one Query per day, never a Scan) and shows:

* notices per day by kind (a stacked bar chart);
* sent, failed, deferred, bounced and complained per check (a table and a chart);
* the top failure reasons;
* the recipients with repeated failures.

The charts are built with plotly and its JavaScript is inlined, so the page opens
offline. Each chart's figure is a JSON island (``<script type="application/json">``)
that a few lines of inline script hand to plotly.js, and holds no CRM text: checks,
kinds, dates and counts only. Everything from the CRM or SES (addresses, reasons,
keys) is in the tables, escaped by Jinja2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from chalicelib import ledger, registry
from chalicelib.models import UNREADABLE, Notification

DEFAULT_DAYS = 30
# A longer range is a page no one reads, and a Query per day.
MAX_DAYS = 366
# A recipient with this many failures or more in the range is listed.
REPEATED = 2
TOP_REASONS = 10
# Not settled yet: a transient failure the next run retries (pending), a send SES has
# yet to confirm or deny (unknown), or a claim a run holds or left behind (claimed).
DEFERRED_STATUSES = (ledger.PENDING, ledger.UNKNOWN, ledger.CLAIMED)
OUTCOMES = ("sent", "failed", "deferred", "bounced", "complained")
NO_REASON = "(no reason recorded)"
TEMPLATE = "report.html"


class ReportError(ValueError):
    """The requested range cannot be reported (the message says why)."""


@dataclass
class CheckFigures:
    """One check's notices in the range, by outcome.

    Every notice is exactly one of sent, failed or deferred (its ledger status);
    bounced and complained are what SES reported later about sent ones.
    """

    notices: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    bounced: int = 0
    complained: int = 0

    def add(self, other: CheckFigures) -> None:
        """Add ``other``'s counts to these (the total row)."""
        for name in ("notices", *OUTCOMES):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RecipientFailures:
    """A recipient's failures in the range (failed or bounced notices)."""

    email: str
    failures: int = 0
    kinds: set[str] = field(default_factory=set)
    last_date: str = ""
    last_reason: str = ""


@dataclass(frozen=True)
class Skipped:
    """A ledger entry the report could not use: its key and why."""

    key: str
    reason: str


@dataclass
class LedgerReport:
    """What the page shows, computed from the ledger's notices of a range of dates."""

    start: date
    end: date
    days: list[str]
    kinds: list[str]
    # kind -> notices per day, in the order of ``days``
    per_day: dict[str, list[int]]
    per_check: dict[str, CheckFigures]
    reasons: list[tuple[str, int]]
    recipients: list[RecipientFailures]
    skipped: list[Skipped]

    @property
    def total(self) -> CheckFigures:
        """Every check's figures added up."""
        total = CheckFigures()
        for figures in self.per_check.values():
            total.add(figures)
        return total


def default_range(today: date, days: int = DEFAULT_DAYS) -> tuple[date, date]:
    """The last ``days`` business dates, ending ``today``."""
    return today - timedelta(days=days - 1), today


def dates(start: date, end: date) -> list[date]:
    """Every date from ``start`` to ``end`` inclusive; :class:`ReportError` on a bad range."""
    if end < start:
        raise ReportError(f"--from {start.isoformat()} is after --to {end.isoformat()}")
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise ReportError(f"{count} days asked; a report covers at most {MAX_DAYS}")
    return [start + timedelta(days=n) for n in range(count)]


def notices(start: date, end: date) -> Iterator[Notification]:
    """The ledger's notices of each business date in the range: one Query per day."""
    for day in dates(start, end):
        yield from Notification.by_business_date.query(day.isoformat())


def build(entries: Iterable[Notification], start: date, end: date) -> LedgerReport:
    """Count ``entries`` (notices of the range) per day and kind, per check, per reason."""
    days = [day.isoformat() for day in dates(start, end)]
    kinds = registry.KINDS
    position = {day: n for n, day in enumerate(days)}
    per_day = {name: [0] * len(days) for name in kinds}
    per_check = {name: CheckFigures() for name in registry.NAMES}
    reasons: Counter[str] = Counter()
    recipients: dict[str, RecipientFailures] = {}
    skipped: list[Skipped] = []
    for entry in entries:
        problem = _unusable(entry, kinds, position)
        if problem is not None:
            skipped.append(Skipped(str(entry.id), problem))
            continue
        per_day[entry.kind][position[entry.business_date]] += 1
        figures = per_check[kinds[entry.kind].check]
        figures.notices += 1
        outcome = _outcome(entry)
        setattr(figures, outcome, getattr(figures, outcome) + 1)
        figures.bounced += entry.bounced_at is not None
        figures.complained += entry.complained_at is not None
        reason = _failure(entry)
        if reason is not None:
            reasons[reason] += 1
            _count_failure(recipients, entry, reason)
    repeated = sorted(
        (r for r in recipients.values() if r.failures >= REPEATED),
        key=lambda r: (-r.failures, r.email),
    )
    return LedgerReport(
        start=start,
        end=end,
        days=days,
        kinds=list(kinds),
        per_day=per_day,
        per_check=per_check,
        reasons=sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS],
        recipients=repeated,
        skipped=skipped,
    )


def _unusable(entry: Notification, kinds: dict[str, Any], days: dict[str, int]) -> str | None:
    """Why an entry cannot be counted, or None when it can."""
    if entry.status == UNREADABLE:
        return entry.load_error or "unreadable entry"
    if entry.kind not in kinds:
        return f"unknown kind {entry.kind!r}"
    if entry.business_date not in days:
        return f"business date {entry.business_date!r} outside the range"
    return None


def _outcome(entry: Notification) -> str:
    """``sent``, ``failed`` or ``deferred`` (see :data:`DEFERRED_STATUSES`)."""
    if entry.status == ledger.SENT:
        return "sent"
    if entry.status == ledger.FAILED:
        return "failed"
    # DEFERRED_STATUSES; a status this version does not know is not settled either.
    return "deferred"


def _failure(entry: Notification) -> str | None:
    """The reason a notice failed (permanently, or bounced after sending), or None."""
    if entry.status == ledger.FAILED:
        return str(entry.failure_reason or entry.last_error or NO_REASON)
    if entry.bounced_at is not None:
        return f"bounced ({entry.bounce_type or 'type not reported'})"
    return None


def _count_failure(found: dict[str, RecipientFailures], entry: Notification, reason: str) -> None:
    address = str(entry.recipient_email or "").strip().lower()
    recipient = found.setdefault(address, RecipientFailures(email=address))
    recipient.failures += 1
    recipient.kinds.add(str(entry.kind))
    if entry.business_date >= recipient.last_date:
        recipient.last_date, recipient.last_reason = str(entry.business_date), reason


# --- the page ----------------------------------------------------------------------------


def notices_per_day_figure(report: LedgerReport) -> go.Figure:
    """A stacked bar chart: notices per business date, one colour per kind."""
    figure = go.Figure(
        [
            go.Bar(name=kind, x=report.days, y=report.per_day[kind])
            for kind in report.kinds
            if any(report.per_day[kind])
        ]
    )
    figure.update_layout(
        barmode="stack",
        title="Notices per business date, by kind",
        xaxis={"title": "business date", "type": "category"},
        yaxis={"title": "notices"},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.3},
    )
    return figure


def outcomes_figure(report: LedgerReport) -> go.Figure:
    """A grouped bar chart: each check's sent, failed, deferred, bounced and complained."""
    checks = list(report.per_check)
    figure = go.Figure(
        [
            go.Bar(
                name=outcome, x=checks, y=[getattr(report.per_check[c], outcome) for c in checks]
            )
            for outcome in OUTCOMES
        ]
    )
    figure.update_layout(
        barmode="group",
        title="Outcomes per check",
        yaxis={"title": "notices"},
        template="plotly_white",
    )
    return figure


def _json_island(figure: go.Figure) -> str:
    """A figure's JSON, safe inside ``<script>``: no ``<``, ``>`` or ``&`` left raw."""
    text = str(pio.to_json(figure, validate=True))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(report: LedgerReport, generated_at: datetime) -> str:
    """The whole page: tables, chart data, plotly.js inlined; no external resource."""
    charts = {
        "notices-per-day": _json_island(notices_per_day_figure(report)),
        "outcomes-per-check": _json_island(outcomes_figure(report)),
    }
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            total=report.total,
            outcomes=OUTCOMES,
            deferred_statuses=DEFERRED_STATUSES,
            repeated=REPEATED,
            generated_at=generated_at,
            charts=charts,
            plotly_js=get_plotlyjs(),
        )
    )


def write_report(out: Path, start: date, end: date, generated_at: datetime) -> LedgerReport:
    """Read the range's notices from the ledger and write the page to ``out``."""
    report = build(notices(start, end), start, end)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report, generated_at), encoding="utf-8")
    return report
