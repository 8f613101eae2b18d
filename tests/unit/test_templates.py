"""The mailer's rendering: every notice template's text and HTML parts, escaping, subjects."""

from __future__ import annotations

from typing import Any

import jinja2
import pytest

from chalicelib.checks.repayment_reminders import EscalationRow
from chalicelib.mailer import Email, Recipient, render
from tests.factories import BROOKE as BROOKE_EMAIL
from tests.support import LENDER

BROOKE = Recipient(id="bdm-1", name="Brooke Davis", email=BROOKE_EMAIL)
ESCALATED = EscalationRow("APP-1001", "Ben Lee, Mia Chen", "$2,450.50", "30/11/2026", 12)

STALE_ROW = {
    "reference": "APP-1001",
    "stage": "Valuation Ordered",
    "days_in_stage": 21,
    "loan_amount": "$750,000.00",
    "broker": "Harbour Finance Brokers",
}

TEMPLATE_CASES: dict[str, dict[str, Any]] = {
    "note_reminder": {
        "title": "Call the valuer",
        "content": "Chase the valuation report.",
        "reference": "APP-1001",
        "remind_date": "23/11/2026",
        "role": "author",
    },
    "repayment_upcoming": {
        "amount": "$2,450.50",
        "due_date": "30/11/2026",
        "reference": "APP-1001",
        "days_overdue": -7,
        "days_until_due": 7,
    },
    "repayment_overdue": {
        "amount": "$2,450.50",
        "due_date": "30/11/2026",
        "reference": "APP-1001",
        "days_overdue": 3,
        "days_until_due": -3,
    },
    "repayment_urgent": {
        "amount": "$2,450.50",
        "due_date": "30/11/2026",
        "reference": "APP-1001",
        "days_overdue": 7,
        "days_until_due": -7,
    },
    "repayment_escalation": {"repayments": [ESCALATED]},
    "stale_applications": {"applications": [STALE_ROW], "threshold_days": 14},
}

# What each kind must show, in both the text and the HTML part.
TEMPLATE_FACTS: dict[str, list[str]] = {
    "note_reminder": ["Call the valuer", "Chase the valuation report.", "APP-1001", "23/11/2026"],
    "repayment_upcoming": ["$2,450.50", "30/11/2026", "APP-1001", "in 7 days"],
    "repayment_overdue": ["$2,450.50", "30/11/2026", "APP-1001", "3 days overdue"],
    "repayment_urgent": ["$2,450.50", "30/11/2026", "APP-1001", "7 days overdue"],
    "repayment_escalation": ["$2,450.50", "30/11/2026", "APP-1001", "Ben Lee, Mia Chen", "12"],
    "stale_applications": [
        "APP-1001",
        "Valuation Ordered",
        "21",
        "$750,000.00",
        "Harbour Finance Brokers",
        "14 days",
    ],
}

# One key each template really uses; without it StrictUndefined must refuse to render.
REQUIRED_KEY = {
    "note_reminder": "content",
    "repayment_upcoming": "amount",
    "repayment_overdue": "days_overdue",
    "repayment_urgent": "due_date",
    "repayment_escalation": "repayments",
    "stale_applications": "applications",
}


@pytest.mark.parametrize("template", sorted(TEMPLATE_CASES))
def test_render_produces_text_and_html_for_every_kind(template: str) -> None:
    email = render(template, BROOKE, "Subject line", TEMPLATE_CASES[template], lender=LENDER)

    assert email.to == BROOKE
    assert email.subject == "Subject line"
    assert email.text.startswith("Hi Brooke Davis,")
    assert "<html" not in email.text
    assert email.html.lstrip().startswith("<!DOCTYPE html>")
    assert "<title>Subject line</title>" in email.html
    assert "Hi Brooke Davis," in email.html
    for fact in TEMPLATE_FACTS[template]:
        assert fact in email.text, (template, fact)
        assert fact in email.html, (template, fact)


@pytest.mark.parametrize("template", sorted(TEMPLATE_CASES))
def test_render_refuses_a_missing_context_key(template: str) -> None:
    context = {k: v for k, v in TEMPLATE_CASES[template].items() if k != REQUIRED_KEY[template]}

    with pytest.raises(jinja2.UndefinedError, match=f"'{REQUIRED_KEY[template]}' is undefined"):
        render(template, BROOKE, "Subject line", context, lender=LENDER)


def test_render_escapes_html_only_in_the_html_part() -> None:
    context = {
        **TEMPLATE_CASES["note_reminder"],
        "title": "<script>alert(1)</script>",
        "content": "Tom & Jerry <b>bold</b>",
    }

    email = render("note_reminder", BROOKE, "Note Reminder: x", context, lender=LENDER)

    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "Tom &amp; Jerry &lt;b&gt;bold&lt;/b&gt;" in email.html
    assert "<script>alert(1)</script>" in email.text
    assert "Tom & Jerry <b>bold</b>" in email.text


def test_render_flattens_the_subject_to_one_line() -> None:
    email = render(
        "note_reminder",
        BROOKE,
        "Note Reminder: hi\r\nBcc: attacker@evil.example",
        TEMPLATE_CASES["note_reminder"],
        lender=LENDER,
    )

    assert email.subject == "Note Reminder: hi Bcc: attacker@evil.example"


def test_render_escalation_digest_lists_every_repayment_as_a_row() -> None:
    later = EscalationRow("APP-1002", "José Núñez", "$980.00", "28/11/2026", 14)

    email = render(
        "repayment_escalation",
        BROOKE,
        "ESCALATION",
        {"repayments": [later, ESCALATED]},
        lender=LENDER,
    )

    assert "These 2 repayments are overdue and need your attention:" in email.text
    assert "- APP-1002: José Núñez, $980.00 due 28/11/2026, 14 days overdue" in email.text
    assert "- APP-1001: Ben Lee, Mia Chen, $2,450.50 due 30/11/2026, 12 days overdue" in email.text
    assert "<td>José Núñez</td>" in email.html
    assert email.html.count("<td>APP-100") == 2


def _footer(email: Email) -> str:
    return email.text[email.text.index("Questions?") :]


@pytest.mark.parametrize("template", sorted(TEMPLATE_CASES))
def test_every_kind_carries_the_lender_contact_lines_and_legal_footer(template: str) -> None:
    email = render(template, BROOKE, "Subject line", TEMPLATE_CASES[template], lender=LENDER)

    for part in (email.text, email.html):
        assert "1300 000 000" in part
        assert "loans@lender.example.com.au" in part
        assert "Example Home Loans Pty Ltd, ABN 12 345 678 901" in part
        assert "PO Box 1234, Sydney NSW 2001" in part
        assert "or reply to this email" in part
        assert "do not reply" not in part.lower()
        assert "Loan CRM" not in part
    assert 'href="mailto:loans@lender.example.com.au"' in email.html
    # The escalation too: one spacing and one footer for every kind.
    note = render("note_reminder", BROOKE, "s", TEMPLATE_CASES["note_reminder"], lender=LENDER)
    assert _footer(email) == _footer(note)
    assert "\n\n\n" not in email.text


def test_the_greeting_uses_the_first_name_when_the_crm_has_one() -> None:
    zoe = Recipient("bdm-2", "Zoë Papadopoulos", "zoe@lender.example.com.au", first_name="Zoë")
    hoa = Recipient("bor-3", "Nguyễn Thị Hoa", "hoa@example.net")

    with_first = render("note_reminder", zoe, "s", TEMPLATE_CASES["note_reminder"], lender=LENDER)
    without = render("note_reminder", hoa, "s", TEMPLATE_CASES["note_reminder"], lender=LENDER)

    assert with_first.text.startswith("Hi Zoë,\n")
    assert "<p>Hi Zoë,</p>" in with_first.html
    # No first name in the CRM: the whole name, never a guess at which part is the first.
    assert without.text.startswith("Hi Nguyễn Thị Hoa,\n")
    assert "<p>Hi Nguyễn Thị Hoa,</p>" in without.html


def test_render_upcoming_says_today_and_tomorrow() -> None:
    today = {**TEMPLATE_CASES["repayment_upcoming"], "days_overdue": 0, "days_until_due": 0}
    tomorrow = {**TEMPLATE_CASES["repayment_upcoming"], "days_overdue": -1, "days_until_due": 1}

    assert "(today)" in render("repayment_upcoming", BROOKE, "s", today, lender=LENDER).text
    assert "(tomorrow)" in render("repayment_upcoming", BROOKE, "s", tomorrow, lender=LENDER).html


def test_render_stale_digest_lists_every_row() -> None:
    second = {**STALE_ROW, "reference": "APP-1002", "stage": "ILOO Issued", "days_in_stage": 15}
    context = {"applications": [STALE_ROW, second], "threshold_days": 14}

    email = render(
        "stale_applications",
        BROOKE,
        "Stale Application Alert: 2 applications",
        context,
        lender=LENDER,
    )

    assert "These 2 applications have" in email.text
    assert "APP-1002: ILOO Issued, 15 days in stage" in email.text
    assert email.html.count("<td>APP-100") == 2
