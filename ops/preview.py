"""Sample renders of every email kind, for ``python -m ops.cli preview KIND``.

The samples go through the same templates, subjects and formatting as the
checks (Jinja2 with ``StrictUndefined``), so a template that needs a value the
sample lacks fails here as it would in a run. No AWS is involved. The people
have accented and non-Latin names, as the CRM's do; the lender is the demo's
placeholder identity.
"""

from __future__ import annotations

from datetime import date, timedelta

from chalicelib import registry
from chalicelib.checks.note_reminders import NOTE_REMINDER
from chalicelib.checks.repayment_reminders import TIERS, EscalationRow, escalation_email
from chalicelib.checks.stale_applications import STALE_DIGEST, StaleRow
from chalicelib.config import Lender, Thresholds
from chalicelib.formatting import au_date, money
from chalicelib.mailer import Email, Recipient, render
from ops.demo import LENDER_ENVIRONMENT

SAMPLE_DAY = date(2026, 11, 23)
BDM = Recipient(
    id="staff-zoe",
    name="Zoë Papadopoulos",
    email="zoe.papadopoulos@example.com.au",
    first_name="Zoë",
)
AUTHOR = Recipient(
    id="staff-hoa", name="Nguyễn Thị Hoa", email="hoa.nguyen@example.com.au", first_name="Hoa"
)
BORROWER = Recipient(
    id="bor-nunez", name="José Núñez", email="jose.nunez@example.net", first_name="José"
)
LENDER = Lender.from_env(LENDER_ENVIRONMENT)

# The kinds ``preview`` renders: every kind of notice, by the name the ledger uses.
KINDS: tuple[str, ...] = tuple(registry.KINDS)


def sample(kind: str, thresholds: Thresholds | None = None) -> Email:
    """Render ``kind`` with a realistic sample; ``ValueError`` for an unknown kind."""
    # One branch per kind of email, each its sample and its subject side by side, so a
    # kind's preview reads as one block; splitting them would only add indirection.
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
            lender=LENDER,
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
            lender=LENDER,
        )
    tier = next(tier for tier in TIERS if tier.kind.name == kind)
    days = max(tier.starts(t), -5)  # the first day of its window, at most 5 days ahead
    due = au_date(SAMPLE_DAY - timedelta(days=days))
    if tier.to_bdm:
        overdue = [
            EscalationRow("APP-1001", "José Núñez, Nguyễn Thị Hoa", money(2_980.15), due, days),
            EscalationRow(
                "APP-1004",
                "Emma Wilson",
                money(1_415.00),
                au_date(SAMPLE_DAY - timedelta(days=days + 2)),
                days + 2,
            ),
        ]
        return escalation_email(BDM, overdue, LENDER)
    context: dict[str, object] = {
        "amount": money(2_980.15),
        "due_date": due,
        "reference": "APP-1001",
        "days_overdue": days,
        "days_until_due": -days,
    }
    subject = tier.subject_for("APP-1001", due, days)
    return render(tier.template, BORROWER, subject, context, lender=LENDER)
