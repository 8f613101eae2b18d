"""Execution: each check sends the right notices to the right people, once.

Business "today" is the Sydney date of the scheduled time; the default run below
is Monday 23/11/2026 09:00 AEDT, inside every check's business-time window.
Assertions are on what moto's SES captured and on DynamoDB state only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest
from mypy_boto3_sesv2 import SESV2Client

from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.ledger import PENDING, SENT
from chalicelib.models import Notification, Repayment
from tests import factories as f
from tests.support import (
    Fault,
    SentEmail,
    ledger_key,
    run,
    sent_emails,
    ses_error,
    ses_faults,
    sydney,
    utc,
)

pytestmark = [pytest.mark.task, pytest.mark.execution]

TODAY = date(2026, 11, 23)
AT = sydney("2026-11-23 09:00")

BDM = "brooke.davis@lender.example.com.au"
AUTHOR = "sam.author@lender.example.com.au"
BEN = "ben.lee@example.net"
MIA = "mia.chen@example.net"

FLAGS = ("reminder_sent", "overdue_3_day_sent", "overdue_7_day_sent", "overdue_10_day_sent")


# The subjects as borrowers and the BDM read them: the loan and the real day count.
def upcoming(days: int) -> str:
    """The upcoming reminder of a repayment due ``-days`` days from today."""
    return f"Upcoming Repayment Reminder: APP-1001 due {shown(days)}"


def overdue(days: int) -> str:
    return f"OVERDUE Repayment Notice: APP-1001, {days} days overdue"


def urgent(days: int) -> str:
    return f"URGENT: {days} Days OVERDUE Repayment: APP-1001"


def escalation(days: int) -> str:
    return f"ESCALATION: {days} Days Overdue Repayment: APP-1001"


def shown(days: int) -> str:
    """The due date ``days`` days ago as the emails show it (01/12/2026)."""
    return (TODAY - timedelta(days=days)).strftime("%d/%m/%Y")


# --- helpers -----------------------------------------------------------------


def days_ago(days: int) -> str:
    """The ISO date ``days`` before the business today (negative: in the future)."""
    return (TODAY - timedelta(days=days)).isoformat()


def on(day: str, hour: str = "09:00") -> datetime:
    """A Sydney instant on ``day`` (ISO date)."""
    return sydney(f"{day} {hour}")


def stale_since(days: int) -> str:
    """A ``stage_last_updated`` (AEDT) that is ``days`` days before the business today."""
    return f"{days_ago(days)}T10:00:00+11:00"


def by_recipient(emails: list[SentEmail]) -> dict[str, SentEmail]:
    """Index single-recipient emails by their only recipient (fails on several)."""
    out: dict[str, SentEmail] = {}
    for sent in emails:
        assert len(sent.recipients) == 1, sent.recipients
        assert sent.recipients[0] not in out, f"two emails to {sent.recipients[0]}"
        out[sent.recipients[0]] = sent
    return out


def flags(repayment_id: str = "rep-1") -> dict[str, bool | None]:
    """The four reminder flags of a repayment as stored in DynamoDB."""
    item = Repayment.get(repayment_id, consistent_read=True)
    return {flag: getattr(item, flag) for flag in FLAGS}


def only(flag: str | None) -> dict[str, bool | None]:
    """The flags expected when exactly ``flag`` has been set."""
    return {name: (True if name == flag else None) for name in FLAGS}


def two_borrower_loan(**repayment: object) -> None:
    """BDM, author, borrowers Ben Lee and Mia Chen on APP-1001, and one repayment."""
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment("rep-1", **repayment)


# --- stale applications ------------------------------------------------------


def test_it_alerts_the_bdm_of_an_application_fourteen_days_in_one_stage(
    service: Settings, ses: SESV2Client
) -> None:
    # Given an application that entered "Valuation Ordered" exactly 14 days ago
    f.crm()
    f.application(stage_last_updated=stale_since(14))

    # When the stale check runs
    run("stale_applications", AT, ses)

    # Then its BDM alone gets one alert with the application's details
    [sent] = sent_emails()
    assert sent.recipients == [BDM]
    assert sent.subject == "Stale Application Alert: APP-1001"
    for expected in (
        "APP-1001",
        "Valuation Ordered",
        "14 days in stage",
        "$750,000.00",
        "Harbour Finance Brokers",
    ):
        assert expected in sent.text
    for expected in ("APP-1001", "Valuation Ordered", "<td>14</td>", "$750,000.00"):
        assert expected in sent.html
    # and the ledger records the delivery with SES's message id
    key = ledger_key("stale_applications", "app-1", "valuation_ordered", stale_since(14), 0)
    entry = Notification.get(key, consistent_read=True)
    assert entry.status == SENT
    assert entry.message_id == sent.message_id
    assert entry.recipient_email == BDM


def test_it_does_not_alert_an_application_thirteen_days_in_one_stage(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(stage_last_updated=stale_since(13))

    run("stale_applications", AT, ses)

    assert sent_emails() == []


def test_it_never_alerts_applications_in_a_terminal_stage(
    service: Settings, ses: SESV2Client
) -> None:
    # Given applications stuck for a year, but each in a terminal stage
    f.crm()
    for n, stage in enumerate(["settled", "closed", "declined", "withdrawn"]):
        f.application(
            f"app-{n}",
            reference_number=f"APP-{stage}",
            stage=stage,
            stage_last_updated="2025-11-01T10:00:00+11:00",
        )

    run("stale_applications", AT, ses)

    assert sent_emails() == []


def test_it_alerts_every_non_terminal_stage_by_its_label(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    labels = {
        "inquiry": "Inquiry",
        "iloo_issued": "ILOO Issued",
        "more_info_required": "More Info Required",
        "settlement_conditions": "Settlement Conditions",
    }
    for n, stage in enumerate(labels):
        f.application(
            f"app-{n}",
            reference_number=f"APP-{n}",
            stage=stage,
            stage_last_updated=stale_since(30),
        )

    run("stale_applications", AT, ses)

    [sent] = sent_emails()
    assert sent.subject == "Stale Application Alert: 4 applications"
    for n, label in enumerate(labels.values()):
        assert f"APP-{n}: {label}, 30 days in stage" in sent.text


def test_it_sends_one_digest_for_several_stale_applications_of_one_bdm(
    service: Settings, ses: SESV2Client
) -> None:
    # Given three stale applications and one fresh one, all with the same BDM
    f.crm()
    f.application("app-1", reference_number="APP-1001", stage_last_updated=stale_since(14))
    f.application(
        "app-2",
        reference_number="APP-1002",
        stage="formal_approval",
        stage_last_updated=stale_since(40),
        loan_amount=1250000.5,
        broker_name="Coastal Mortgages",
    )
    f.application("app-3", reference_number="APP-1003", stage_last_updated=stale_since(20))
    f.application("app-4", reference_number="APP-1004", stage_last_updated=stale_since(3))

    run("stale_applications", AT, ses)

    # Then the BDM gets ONE email listing the three stale ones only
    [sent] = sent_emails()
    assert sent.recipients == [BDM]
    assert sent.subject == "Stale Application Alert: 3 applications"
    assert "APP-1001: Valuation Ordered, 14 days in stage" in sent.text
    assert (
        "APP-1002: Formal Approval, 40 days in stage, loan amount $1,250,000.50, "
        "broker Coastal Mortgages" in sent.text
    )
    assert "APP-1003: Valuation Ordered, 20 days in stage" in sent.text
    assert "APP-1004" not in sent.text
    # and every application in the digest is recorded as sent by that one message
    keys = [
        ledger_key("stale_applications", "app-1", "valuation_ordered", stale_since(14), 0),
        ledger_key("stale_applications", "app-2", "formal_approval", stale_since(40), 3),
        ledger_key("stale_applications", "app-3", "valuation_ordered", stale_since(20), 0),
    ]
    entries = list(Notification.batch_get(keys, consistent_read=True))
    assert sorted(e.id for e in entries) == sorted(keys)
    assert {(e.status, e.message_id) for e in entries} == {(SENT, sent.message_id)}


def test_it_sends_each_bdm_their_own_digest(service: Settings, ses: SESV2Client) -> None:
    f.crm()
    f.staff("bdm-2", "Omar Khan", "omar.khan@lender.example.com.au")
    f.application("app-1", reference_number="APP-1001", stage_last_updated=stale_since(15))
    f.application("app-2", reference_number="APP-1002", stage_last_updated=stale_since(16))
    f.application(
        "app-3", reference_number="APP-2001", bd_id="bdm-2", stage_last_updated=stale_since(14)
    )

    run("stale_applications", AT, ses)

    emails = by_recipient(sent_emails())
    assert set(emails) == {BDM, "omar.khan@lender.example.com.au"}
    brooke = emails[BDM]
    omar = emails["omar.khan@lender.example.com.au"]
    assert brooke.subject == "Stale Application Alert: 2 applications"
    assert "APP-1001" in brooke.text
    assert "APP-1002" in brooke.text
    assert "APP-2001" not in brooke.text
    assert omar.subject == "Stale Application Alert: APP-2001"
    assert "APP-1001" not in omar.text
    assert "APP-1002" not in omar.text


def test_a_rerun_on_the_same_day_sends_no_second_stale_alert(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(stage_last_updated=stale_since(14))

    run("stale_applications", AT, ses)
    run("stale_applications", sydney("2026-11-23 10:00"), ses)
    run("stale_applications", sydney("2026-11-23 19:00"), ses)

    assert len(sent_emails()) == 1


def test_it_re_alerts_every_seven_days_in_the_same_stage(
    service: Settings, ses: SESV2Client
) -> None:
    # Given an application first stale today (day 14)
    f.crm()
    f.application(stage_last_updated=stale_since(14))
    run("stale_applications", AT, ses)
    assert len(sent_emails()) == 1

    # When it is still in that stage on days 15..20, nothing more is sent
    for day in range(1, 7):
        run("stale_applications", on((TODAY + timedelta(days=day)).isoformat()), ses)
    assert len(sent_emails()) == 1

    # Then on day 21 the BDM is alerted again, with the new day count
    run("stale_applications", on("2026-11-30"), ses)
    emails = sent_emails()
    assert len(emails) == 2
    assert emails[1].subject == "Stale Application Alert: APP-1001"
    assert "APP-1001: Valuation Ordered, 21 days in stage" in emails[1].text


def test_a_stage_change_restarts_the_stale_clock(service: Settings, ses: SESV2Client) -> None:
    # Given an application alerted today at day 14
    f.crm()
    f.application(stage_last_updated=stale_since(14))
    run("stale_applications", AT, ses)
    assert len(sent_emails()) == 1

    # When it moves to Formal Approval two days later
    f.application(stage="formal_approval", stage_last_updated="2026-11-25T15:30:00+11:00")

    # Then day 21 of the old stage passes silently, and so does day 13 of the new one
    run("stale_applications", on("2026-11-30"), ses)
    run("stale_applications", on("2026-12-08"), ses)
    assert len(sent_emails()) == 1

    # and it is alerted 14 days after the change, in its new stage
    run("stale_applications", on("2026-12-09"), ses)
    emails = sent_emails()
    assert len(emails) == 2
    assert "APP-1001: Formal Approval, 14 days in stage" in emails[1].text


def test_a_new_stage_last_updated_in_the_same_stage_restarts_the_clock(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(stage_last_updated=stale_since(14))
    run("stale_applications", AT, ses)

    # The CRM re-entered the same stage on 25/11 (e.g. a second valuation)
    f.application(stage_last_updated="2026-11-25T09:00:00+11:00")
    run("stale_applications", on("2026-11-30"), ses)  # old clock: day 21
    assert len(sent_emails()) == 1

    run("stale_applications", on("2026-12-09"), ses)  # new clock: day 14
    assert len(sent_emails()) == 2
    assert "14 days in stage" in sent_emails()[1].text


def test_days_in_stage_are_counted_in_the_business_timezone(
    service: Settings, ses: SESV2Client
) -> None:
    # Given stage changes recorded with various UTC offsets around midnight in Sydney
    f.crm()
    changes = {
        # 23:59 on 09/11 in Sydney: 14 business days ago
        "APP-Z-2359": "2026-11-09T12:59:00Z",
        "APP-UTC-2359": "2026-11-09T12:59:00+00:00",
        # 09:00 on 09/11 in Perth is 12:00 in Sydney: 14 days
        "APP-PERTH": "2026-11-09T09:00:00+08:00",
        # 00:00 on 10/11 in Sydney although the UTC date is still 09/11: 13 days
        "APP-Z-0000": "2026-11-09T13:00:00Z",
        "APP-NY": "2026-11-09T08:00:00-05:00",
    }
    for n, (reference, changed) in enumerate(changes.items()):
        f.application(f"app-{n}", reference_number=reference, stage_last_updated=changed)

    run("stale_applications", AT, ses)

    # Then exactly the ones 14 Sydney days old are in the digest
    [sent] = sent_emails()
    assert sent.subject == "Stale Application Alert: 3 applications"
    for reference in ("APP-Z-2359", "APP-UTC-2359", "APP-PERTH"):
        assert f"{reference}: Valuation Ordered, 14 days in stage" in sent.text
    assert "APP-Z-0000" not in sent.text
    assert "APP-NY" not in sent.text


def test_a_utc_offset_stage_change_becomes_stale_on_the_right_business_day(
    service: Settings, ses: SESV2Client
) -> None:
    # 13:00 UTC on 09/11 is 00:00 on 10/11 in Sydney, so day 14 is 24/11, not 23/11
    f.crm()
    f.application(stage_last_updated="2026-11-09T13:00:00Z")

    run("stale_applications", AT, ses)
    assert sent_emails() == []

    run("stale_applications", on("2026-11-24"), ses)
    [sent] = sent_emails()
    assert "14 days in stage" in sent.text


def test_a_missing_loan_amount_is_shown_as_not_recorded(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(stage_last_updated=stale_since(14), loan_amount=None)

    run("stale_applications", AT, ses)

    [sent] = sent_emails()
    assert "loan amount Not recorded" in sent.text
    assert "Not recorded" in sent.html
    assert "$" not in sent.text


def test_the_stale_threshold_is_configurable(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a five-day threshold
    monkeypatch.setenv("STALE_AFTER_DAYS", "5")
    f.crm()
    f.application("app-1", reference_number="APP-1001", stage_last_updated=stale_since(5))
    f.application("app-2", reference_number="APP-1002", stage_last_updated=stale_since(4))

    run("stale_applications", AT, ses)

    [sent] = sent_emails()
    assert sent.subject == "Stale Application Alert: APP-1001"
    assert "5 days in stage" in sent.text
    assert "APP-1002" not in sent.text


def test_the_stale_repeat_interval_is_configurable(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STALE_REPEAT_DAYS", "2")
    f.crm()
    f.application(stage_last_updated=stale_since(14))

    run("stale_applications", AT, ses)  # day 14
    run("stale_applications", on("2026-11-24"), ses)  # day 15: same cycle
    run("stale_applications", on("2026-11-25"), ses)  # day 16: next cycle

    assert [("16 days" in e.text) for e in sent_emails()] == [False, True]


# --- note reminders ----------------------------------------------------------


def test_a_note_due_today_reminds_its_author_and_the_applications_bdm(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note by Sam on APP-1001 (BDM Brooke) to be reminded today
    f.crm()
    f.application()
    f.note(remind_date="2026-11-23")

    run("note_reminders", AT, ses)

    # Then each of them gets their own email
    emails = by_recipient(sent_emails())
    assert set(emails) == {AUTHOR, BDM}
    for sent in emails.values():
        assert sent.subject == "Note Reminder: Call the valuer"
        for expected in (
            "Call the valuer",
            "Chase the valuation report for the Parramatta property.",
            "APP-1001",
            "23/11/2026",
        ):
            assert expected in sent.text
            assert expected in sent.html
    assert "Hi Sam Author" in emails[AUTHOR].text
    assert "Hi Brooke Davis" in emails[BDM].text


def test_note_reminders_are_recorded_as_sent_with_the_ses_message_id(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.note()

    run("note_reminders", AT, ses)

    emails = by_recipient(sent_emails())
    for staff_id, address in (("staff-2", AUTHOR), ("bdm-1", BDM)):
        entry = Notification.get(ledger_key("note_reminders", "note-1", "2026-11-23", staff_id))
        assert entry.status == SENT
        assert entry.message_id == emails[address].message_id
        assert entry.recipient_email == address
        assert entry.item_id == "note-1"
        assert entry.subject == "Note Reminder: Call the valuer"
        assert entry.business_date == "2026-11-23"


def test_an_author_who_is_also_the_bdm_gets_one_reminder(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.note(created_by="bdm-1")

    run("note_reminders", AT, ses)

    [sent] = sent_emails()
    assert sent.recipients == [BDM]
    assert sent.subject == "Note Reminder: Call the valuer"


@pytest.mark.parametrize("days", [1, 2, 3])
def test_a_missed_note_reminder_is_caught_up_within_three_days(
    service: Settings, ses: SESV2Client, days: int
) -> None:
    # Given a note whose remind date passed while the service was down
    f.crm()
    f.application()
    f.note(remind_date=days_ago(days))

    run("note_reminders", AT, ses)

    # Then both people are still reminded, with the note's own date
    emails = by_recipient(sent_emails())
    assert set(emails) == {AUTHOR, BDM}
    shown = (TODAY - timedelta(days=days)).strftime("%d/%m/%Y")
    assert all(shown in e.text for e in emails.values())


@pytest.mark.parametrize("remind_date", [days_ago(4), days_ago(30), days_ago(-1)])
def test_notes_due_more_than_three_days_ago_or_in_the_future_are_not_reminded(
    service: Settings, ses: SESV2Client, remind_date: str
) -> None:
    f.crm()
    f.application()
    f.note(remind_date=remind_date)

    run("note_reminders", AT, ses)

    assert sent_emails() == []


def test_a_note_reminded_on_its_date_is_not_caught_up_again(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.note(remind_date="2026-11-23")

    for day in ("2026-11-23", "2026-11-24", "2026-11-25", "2026-11-26"):
        run("note_reminders", on(day), ses)

    assert len(sent_emails()) == 2


def test_a_rerun_on_the_same_day_sends_no_second_note_reminder(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.note()

    run("note_reminders", sydney("2026-11-23 08:00"), ses)
    run("note_reminders", sydney("2026-11-23 09:00"), ses)

    assert sorted(e.recipients[0] for e in sent_emails()) == sorted([AUTHOR, BDM])


def test_a_note_without_an_application_reminds_only_its_author(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.note(application_id=None)

    run("note_reminders", AT, ses)

    [sent] = sent_emails()
    assert sent.recipients == [AUTHOR]
    assert sent.subject == "Note Reminder: Call the valuer"
    assert "Chase the valuation report" in sent.text
    assert "APP-1001" not in sent.text


def test_a_note_added_later_in_the_day_is_reminded_by_the_next_run(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    run("note_reminders", sydney("2026-11-23 10:00"), ses)
    assert sent_emails() == []

    f.note()
    run("note_reminders", sydney("2026-11-23 12:00"), ses)

    assert len(sent_emails()) == 2


# --- repayment reminders -----------------------------------------------------


def test_an_upcoming_repayment_reminds_each_borrower_separately(
    service: Settings, ses: SESV2Client
) -> None:
    # Given an unpaid repayment due in three days, on a two-borrower loan
    two_borrower_loan(due_date=days_ago(-3))

    run("repayment_reminders", AT, ses)

    # Then each borrower gets their own reminder, addressed to them alone
    emails = by_recipient(sent_emails())
    assert set(emails) == {BEN, MIA}
    assert {e.subject for e in emails.values()} == {upcoming(-3)}
    assert "Hi Ben Lee" in emails[BEN].text
    assert "Mia" not in emails[BEN].text
    assert "Hi Mia Chen" in emails[MIA].text
    assert "Ben" not in emails[MIA].text
    # and the repayment is flagged
    assert flags() == only("reminder_sent")


@pytest.mark.parametrize(
    ("window", "subject", "flag"),
    [
        (range(-7, 1), upcoming, "reminder_sent"),
        (range(3, 7), overdue, "overdue_3_day_sent"),
        (range(7, 10), urgent, "overdue_7_day_sent"),
    ],
    ids=["upcoming-7..0", "overdue-3..6", "urgent-7..9"],
)
def test_every_day_of_a_borrower_window_gets_that_windows_notice(
    service: Settings,
    ses: SESV2Client,
    window: range,
    subject: Callable[[int], str],
    flag: str,
) -> None:
    recipients = {BEN, MIA}
    # Given one unpaid repayment for each day of the window (d = today - due date)
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    for days in window:
        f.repayment(f"rep{days}", due_date=days_ago(days))

    run("repayment_reminders", AT, ses)

    # Then every recipient gets one email per repayment, addressed to them alone
    emails = sent_emails()
    # each subject naming its loan and how late it really is (or its due date)
    assert sorted(e.subject for e in emails) == sorted(
        subject(d) for d in window for _ in recipients
    )
    assert all(len(e.recipients) == 1 for e in emails)
    assert len(emails) == len(window) * len(recipients)
    due_dates = {(TODAY - timedelta(days=d)).strftime("%d/%m/%Y") for d in window}
    for address in recipients:
        theirs = [e for e in emails if e.recipients == [address]]
        assert len(theirs) == len(window)
        assert {d for e in theirs for d in due_dates if d in e.text} == due_dates
    # and overdue notices state how many days overdue the repayment is
    for days in (d for d in window if d > 0):
        assert any(f"{days} days overdue" in e.text for e in emails)
    # and each repayment carries exactly that window's flag
    for days in window:
        assert flags(f"rep{days}") == only(flag)


def test_every_day_of_the_escalation_window_is_one_row_of_the_bdms_one_digest(
    service: Settings, ses: SESV2Client
) -> None:
    # Given one unpaid repayment for each day of the escalation window, all one BDM's
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    window = range(10, 18)
    for days in window:
        f.repayment(f"rep{days}", due_date=days_ago(days))

    run("repayment_reminders", AT, ses)

    # Then the BDM gets one digest: its subject counts them, a row per repayment
    [digest] = sent_emails()
    assert digest.recipients == [BDM]
    assert digest.subject == "ESCALATION: 8 Overdue Repayments, 10 to 17 Days"
    rows = [line for line in digest.text.splitlines() if line.startswith("- ")]
    assert rows == [
        f"- APP-1001: Ben Lee, Mia Chen, $2,450.50 due {shown(d)}, {d} days overdue"
        for d in reversed(window)
    ]
    assert digest.html.count("<td>APP-1001</td>") == len(window)
    # and each repayment has its own sent ledger entry and its flag
    for days in window:
        key = ledger_key("repayment_overdue_10_day", f"rep{days}", days_ago(days), "bdm-1")
        assert Notification.get(key).status == SENT
        assert flags(f"rep{days}") == only("overdue_10_day_sent")


def test_nothing_is_due_outside_the_windows(service: Settings, ses: SESV2Client) -> None:
    # Given repayments 8 days ahead, 1-2 days late (grace) and past escalation
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    quiet = (-30, -8, 1, 2, 18, 40)
    for days in quiet:
        f.repayment(f"rep{days}", due_date=days_ago(days))

    run("repayment_reminders", AT, ses)

    assert sent_emails() == []
    for days in quiet:
        assert flags(f"rep{days}") == only(None)


def test_the_escalation_goes_only_to_the_bdm_and_names_every_borrower(
    service: Settings, ses: SESV2Client
) -> None:
    two_borrower_loan(due_date=days_ago(12))

    run("repayment_reminders", AT, ses)

    [sent] = sent_emails()
    assert sent.recipients == [BDM]
    assert sent.subject == escalation(12)
    assert "Hi Brooke Davis" in sent.text
    assert f"- APP-1001: Ben Lee, Mia Chen, $2,450.50 due {shown(12)}, 12 days overdue" in sent.text
    assert "Ben Lee" in sent.html
    assert "Mia Chen" in sent.html
    assert "12 days overdue" in sent.text


def test_paid_repayments_are_skipped(service: Settings, ses: SESV2Client) -> None:
    # Given paid repayments in every window
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    for days in (-3, 0, 4, 8, 12):
        f.repayment(f"rep{days}", due_date=days_ago(days), paid_date=days_ago(days + 1))

    run("repayment_reminders", AT, ses)

    assert sent_emails() == []
    for days in (-3, 0, 4, 8, 12):
        assert flags(f"rep{days}") == only(None)


def test_a_notice_whose_flag_is_already_set_is_not_sent_again(
    service: Settings, ses: SESV2Client
) -> None:
    # Given repayments whose due notice the CRM already records as delivered
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    already = {
        -7: "reminder_sent",
        0: "reminder_sent",
        3: "overdue_3_day_sent",
        6: "overdue_3_day_sent",
        7: "overdue_7_day_sent",
        9: "overdue_7_day_sent",
        10: "overdue_10_day_sent",
        17: "overdue_10_day_sent",
    }
    for days, flag in already.items():
        f.repayment(f"rep{days}", due_date=days_ago(days), **{flag: True})

    run("repayment_reminders", AT, ses)

    assert sent_emails() == []
    for days, flag in already.items():
        assert flags(f"rep{days}") == only(flag)


def test_an_earlier_flag_does_not_stop_the_next_notice(service: Settings, ses: SESV2Client) -> None:
    two_borrower_loan(due_date=days_ago(4), reminder_sent=True)

    run("repayment_reminders", AT, ses)

    assert {e.subject for e in sent_emails()} == {overdue(4)}
    assert flags() == {**only("reminder_sent"), "overdue_3_day_sent": True}


def test_a_repayment_first_seen_eight_days_overdue_gets_only_the_urgent_notice(
    service: Settings, ses: SESV2Client
) -> None:
    # Given the runs from the due date to day 7 were all missed
    two_borrower_loan(due_date=days_ago(8))

    run("repayment_reminders", AT, ses)

    # Then only the most severe applicable notice goes out; the superseded never do
    # saying 8 days, as its body does, not the threshold's 7
    assert {e.subject for e in sent_emails()} == {urgent(8)}
    assert all("8 days overdue" in e.text for e in sent_emails())
    assert len(sent_emails()) == 2
    assert flags() == only("overdue_7_day_sent")

    # and later runs in the urgent window do not send the skipped overdue notice
    run("repayment_reminders", on("2026-11-24"), ses)  # d=9
    assert len(sent_emails()) == 2
    assert flags()["overdue_3_day_sent"] is None


def test_a_repayment_goes_through_each_notice_exactly_once(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a repayment due 30/11 and a run on a handful of days around it
    two_borrower_loan(due_date="2026-11-30")
    run_days = ["2026-11-23", "2026-11-27", "2026-11-30", "2026-12-02", "2026-12-03"]
    run_days += ["2026-12-05", "2026-12-07", "2026-12-09", "2026-12-10", "2026-12-17"]
    run_days += ["2026-12-18"]

    for day in run_days:
        run("repayment_reminders", on(day, "07:00"), ses)

    # Then each borrower notice went out once per borrower, and the escalation once
    subjects = [(e.recipients[0], e.subject) for e in sent_emails()]
    assert sorted(subjects) == sorted(
        [(who, s) for s in (upcoming(-7), overdue(3), urgent(7)) for who in (BEN, MIA)]
        + [(BDM, escalation(10))]
    )
    assert flags() == dict.fromkeys(FLAGS, True)


def test_repayment_emails_show_amount_due_date_and_reference(
    service: Settings, ses: SESV2Client
) -> None:
    # Given one repayment of $2,450.50 in each window
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    windows = {-2: upcoming(-2), 4: overdue(4), 8: urgent(8), 12: escalation(12)}
    for days in windows:
        f.repayment(f"rep{days}", due_date=days_ago(days))

    run("repayment_reminders", AT, ses)

    # Then every kind of email carries the amount, its due date and the reference
    emails = sent_emails()
    assert sorted(e.subject for e in emails) == sorted(
        [*windows.values(), *list(windows.values())[:3]]
    )
    for days, subject in windows.items():
        due = (TODAY - timedelta(days=days)).strftime("%d/%m/%Y")
        for sent in (e for e in emails if e.subject == subject):
            for expected in ("$2,450.50", due, "APP-1001"):
                assert expected in sent.text, (subject, expected)
                assert expected in sent.html, (subject, expected)


def test_a_rerun_on_the_same_day_sends_no_second_repayment_notice(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment("rep-1", due_date=days_ago(-3))
    f.repayment("rep-2", due_date=days_ago(4))
    f.repayment("rep-3", due_date=days_ago(8))
    f.repayment("rep-4", due_date=days_ago(12))

    run("repayment_reminders", sydney("2026-11-23 07:00"), ses)
    first = len(sent_emails())
    run("repayment_reminders", sydney("2026-11-23 08:00"), ses)
    run("repayment_reminders", sydney("2026-11-23 19:00"), ses)

    assert first == 7  # three borrower notices x two borrowers + one escalation
    assert len(sent_emails()) == first


def test_repayment_notices_are_recorded_in_the_ledger_per_borrower(
    service: Settings, ses: SESV2Client
) -> None:
    two_borrower_loan(due_date=days_ago(-3))

    run("repayment_reminders", AT, ses)

    emails = by_recipient(sent_emails())
    for borrower_id, address in (("bor-1", BEN), ("bor-2", MIA)):
        entry = Notification.get(
            ledger_key("repayment_upcoming", "rep-1", days_ago(-3), borrower_id),
            consistent_read=True,
        )
        assert entry.status == SENT
        assert entry.message_id == emails[address].message_id
        assert entry.recipient_email == address
        assert entry.item_id == "rep-1"


def test_the_flag_is_set_only_after_every_borrower_has_been_emailed(
    service: Settings, ses: SESV2Client
) -> None:
    # Given SES throttles the email to Mia
    two_borrower_loan(due_date=days_ago(4))

    def throttle_mia(recipient: str) -> Fault:
        return ses_error("TooManyRequestsException", 429) if recipient == MIA else None

    with ses_faults(ses, throttle_mia), pytest.raises(DeliveryIncomplete):
        run("repayment_reminders", AT, ses)

    # Then Ben's notice went out, Mia's stays due and the flag is not set
    assert [e.recipients for e in sent_emails()] == [[BEN]]
    assert flags() == only(None)
    mia_key = ledger_key("repayment_overdue_3_day", "rep-1", days_ago(4), "bor-2")
    assert Notification.get(mia_key, consistent_read=True).status == PENDING

    # When the next run succeeds, only Mia is emailed and then the flag is set
    run("repayment_reminders", sydney("2026-11-23 10:00"), ses)
    assert [e.recipients for e in sent_emails()] == [[BEN], [MIA]]
    assert flags() == only("overdue_3_day_sent")
    assert Notification.get(mia_key, consistent_read=True).status == SENT


def test_the_business_day_is_the_sydney_date_of_the_scheduled_time(
    service: Settings, ses: SESV2Client
) -> None:
    # 22:00 UTC on 22/11 is 09:00 on 23/11 in Sydney: a repayment due 30/11 is
    # seven days away (upcoming), not eight
    two_borrower_loan(due_date="2026-11-30")

    run("repayment_reminders", utc("2026-11-22 22:00"), ses)

    assert {e.subject for e in sent_emails()} == {upcoming(-7)}
    assert flags() == only("reminder_sent")
