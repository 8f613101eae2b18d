"""Sample renders of every email kind, for ``python -m ops.cli preview KIND``.

The samples go through the same templates, subjects and formatting as the
checks (Jinja2 with ``StrictUndefined``), so a template that needs a value the
sample lacks fails here as it would in a run. No AWS is involved.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from chalicelib.checks.repayment_reminders import tier_for
from chalicelib.checks.stale_applications import StaleRow
from chalicelib.config import Thresholds
from chalicelib.formatting import au_date, money
from chalicelib.mailer import Email, Recipient, render

SAMPLE_DAY = date(2026, 11, 23)
BDM = Recipient(id="staff-olivia", name="Olivia Harris", email="olivia.harris@example.com.au")
AUTHOR = Recipient(id="staff-chloe", name="Chloe Nguyen", email="chloe.nguyen@example.com.au")
BORROWER = Recipient(id="bor-wilson", name="Emma Wilson", email="emma.wilson@example.net")

# The template of each email kind (``preview`` takes these names).
KINDS: tuple[str, ...] = (
    "stale_applications",
    "note_reminder",
    "repayment_upcoming",
    "repayment_overdue",
    "repayment_urgent",
    "repayment_escalation",
)


def _repayment_days(t: Thresholds) -> dict[str, int]:
    """A day (past the due date) inside each repayment kind's window."""
    return {
        "repayment_upcoming": -min(5, t.upcoming_days),
        "repayment_overdue": t.overdue_days,
        "repayment_urgent": t.urgent_days,
        "repayment_escalation": t.escalation_days,
    }


def sample(kind: str, thresholds: Thresholds | None = None) -> Email:
    """Render ``kind`` with a realistic sample; ``ValueError`` for an unknown kind."""
    t = thresholds or Thresholds()
    if kind == "stale_applications":
        rows = [
            StaleRow("APP-1003", "ILOO Issued", 41, money(480_000), "—"),
            StaleRow("APP-1002", "More Info Required", 23, money(1_250_000), "Coastal Mortgage"),
            StaleRow("APP-1001", "Valuation Ordered", 16, money(750_000), "Harbour Finance"),
        ]
        return render(
            kind,
            BDM,
            f"Stale Application Alert: {len(rows)} applications",
            {"applications": rows, "threshold_days": t.stale_after_days},
        )
    if kind == "note_reminder":
        return render(
            kind,
            AUTHOR,
            "Note Reminder: Call the valuer",
            {
                "title": "Call the valuer",
                "content": "Chase the valuation report for the Parramatta property.",
                "reference": "APP-1001",
                "remind_date": au_date(SAMPLE_DAY),
                "role": "author",
            },
        )
    repayment_days = _repayment_days(t)
    if kind in repayment_days:
        days = repayment_days[kind]
        tier = tier_for(days, t)
        assert tier is not None  # every day above is inside its kind's window
        context: dict[str, Any] = {
            "amount": money(2_980.15),
            "due_date": au_date(SAMPLE_DAY - timedelta(days=days)),
            "reference": "APP-1001",
            "days_overdue": days,
            "days_until_due": -days,
        }
        if tier.to_bdm:
            context["borrower_names"] = ["Emma Wilson", "Noah Wilson"]
        return render(kind, BDM if tier.to_bdm else BORROWER, tier.subject_for(t), context)
    raise ValueError(f"unknown email kind {kind!r}; expected one of {', '.join(KINDS)}")
