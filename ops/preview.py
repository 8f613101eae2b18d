"""Sample renders of every email kind, for ``python -m ops.cli preview KIND``.

The samples go through the same templates, subjects and formatting as the
checks (Jinja2 with ``StrictUndefined``), so a template that needs a value the
sample lacks fails here as it would in a run. No AWS is involved.
"""

from __future__ import annotations

from datetime import date, timedelta

from chalicelib import registry
from chalicelib.checks.note_reminders import NOTE_REMINDER
from chalicelib.checks.repayment_reminders import TIERS
from chalicelib.checks.stale_applications import STALE_DIGEST, StaleRow
from chalicelib.config import Thresholds
from chalicelib.formatting import au_date, money
from chalicelib.mailer import Email, Recipient, render

SAMPLE_DAY = date(2026, 11, 23)
BDM = Recipient(id="staff-olivia", name="Olivia Harris", email="olivia.harris@example.com.au")
AUTHOR = Recipient(id="staff-chloe", name="Chloe Nguyen", email="chloe.nguyen@example.com.au")
BORROWER = Recipient(id="bor-wilson", name="Emma Wilson", email="emma.wilson@example.net")

# The kinds ``preview`` renders: every kind of notice, by the name the ledger uses.
KINDS: tuple[str, ...] = tuple(registry.KINDS)


def sample(kind: str, thresholds: Thresholds | None = None) -> Email:
    """Render ``kind`` with a realistic sample; ``ValueError`` for an unknown kind."""
    t = thresholds or Thresholds()
    if kind not in registry.KINDS:
        raise ValueError(f"unknown email kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == STALE_DIGEST.name:
        rows = [
            StaleRow("APP-1003", "ILOO Issued", 41, money(480_000), "—"),
            StaleRow("APP-1002", "More Info Required", 23, money(1_250_000), "Coastal Mortgage"),
            StaleRow("APP-1001", "Valuation Ordered", 16, money(750_000), "Harbour Finance"),
        ]
        return render(
            STALE_DIGEST.template,
            BDM,
            f"Stale Application Alert: {len(rows)} applications",
            {"applications": rows, "threshold_days": t.stale_after_days},
        )
    if kind == NOTE_REMINDER.name:
        return render(
            NOTE_REMINDER.template,
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
    tier = next(tier for tier in TIERS if tier.kind.name == kind)
    days = max(tier.starts(t), -5)  # the first day of its window, at most 5 days ahead
    context: dict[str, object] = {
        "amount": money(2_980.15),
        "due_date": au_date(SAMPLE_DAY - timedelta(days=days)),
        "reference": "APP-1001",
        "days_overdue": days,
        "days_until_due": -days,
    }
    if tier.to_bdm:
        context["borrower_names"] = ["Emma Wilson", "Noah Wilson"]
    return render(tier.template, BDM if tier.to_bdm else BORROWER, tier.subject_for(t), context)
