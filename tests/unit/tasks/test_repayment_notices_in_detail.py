"""Repayment notices in detail: what each says, what the operator's log says, the flags.

The escalation names the borrowers and falls back to the application id without a
reference; a superseded notice and a flag left unset on a deleted repayment are
logged with the keys an operator needs; a flag is set only when every notice of
its repayment is sent, re-reading the ones another run held.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from mypy_boto3_sesv2 import SESV2Client
from pynamodb.exceptions import DoesNotExist

from chalicelib import ledger
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.models import REPAYMENTS_PENDING, Notification, Repayment
from chalicelib.runner import run_check
from tests import factories as f
from tests.aws_recorder import another_actor
from tests.factories import BEN, BLAKE, BROOKE, MIA
from tests.support import ledger_key, run, sent_emails, ses_error, ses_faults, sydney

pytestmark = [pytest.mark.task, pytest.mark.execution]

Logs = Callable[[], list[dict[str, Any]]]
MONDAY = sydney("2026-11-23 09:00")


def logged(logs: Logs, message: str) -> list[dict[str, Any]]:
    return [record for record in logs() if record.get("message") == message]


def test_an_escalation_names_every_borrower_reached_to_the_bdm(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 is ten days overdue on an application of Ben and Mia without a reference
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"], reference_number=None)
    f.repayment(due_date="2026-11-13")

    # When the repayment check runs
    run("repayment_reminders", MONDAY, ses)

    # Then Brooke's escalation names both borrowers and the application by its id
    [sent] = sent_emails()
    assert sent.recipients == [BROOKE]
    assert "Ben Lee" in sent.text
    assert "Mia Chen" in sent.text
    assert "app-1" in sent.text
    assert Repayment.get("rep-1").overdue_10_day_sent is True


def test_an_escalation_to_a_bdm_that_does_not_exist_is_reported_and_sends_nothing(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 is ten days overdue and its application's BDM does not exist
    f.crm()
    f.application(bd_id="bdm-9")
    f.repayment(due_date="2026-11-13")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then nothing is sent, the BDM is reported and no flag is set
    assert sent_emails() == []
    assert summary.invalid_items == [{"item_id": "rep-1", "reason": "BDM 'bdm-9' does not exist"}]
    assert not Repayment.get("rep-1").overdue_10_day_sent


def test_an_escalation_of_an_application_without_a_bdm_is_reported(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(bd_id=None)
    f.repayment(due_date="2026-11-13")

    summary = run("repayment_reminders", MONDAY, ses)

    assert sent_emails() == []
    assert summary.invalid_items == [
        {"item_id": "rep-1", "reason": "application 'app-1' has no bd_id"}
    ]


def test_a_superseded_notice_is_logged_with_the_notice_that_superseded_it(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given rep-1's overdue notice reached Ben and was rejected for Mia on 3 December (so
    # no flag stops the milder notice: the ledger does)
    f.repayment_due_to_two_borrowers()
    with ses_faults(ses, lambda to: ses_error("MessageRejected", 400) if to == MIA else None):
        run("repayment_reminders", sydney("2026-12-03 09:00"), ses)
    stdout_json()

    # When a run for 30 November happens afterwards
    run_check("repayment_reminders", at=sydney("2026-11-30 12:00"), now=sydney("2026-12-03 10:00"))

    # Then each borrower's upcoming reminder is logged as superseded by the overdue notice
    records = logged(stdout_json, "notice superseded by a more severe one")
    assert [(r["check"], r["key"], r["superseded_by"]) for r in records] == [
        (
            "repayment_reminders",
            ledger_key("repayment_upcoming", "rep-1", "2026-11-30", b),
            ledger_key("repayment_overdue_3_day", "rep-1", "2026-11-30", b),
        )
        for b in ("bor-1", "bor-2")
    ]


def test_a_flag_not_set_on_a_deleted_repayment_is_logged(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given a repayment the CRM deletes while its reminders are being sent
    f.repayment_due_to_two_borrowers()

    def delete_repayment(to: str) -> None:
        with another_actor():
            Repayment(id="rep-1").delete()

    # When the run sends and then sets the flag
    with ses_faults(ses, delete_repayment):
        run("repayment_reminders", MONDAY, ses)

    # Then the unset flag is logged as a warning naming the repayment and the flag
    [record] = logged(stdout_json, "repayment deleted in the CRM during the run; flag not set")
    assert (record["level"], record["check"], record["item_id"], record["flag"]) == (
        "WARNING",
        "repayment_reminders",
        "rep-1",
        "reminder_sent",
    )
    with pytest.raises(DoesNotExist):
        Repayment.get("rep-1")


def test_no_flag_is_set_when_one_notice_of_the_repayment_failed(
    service: Settings, ses: SESV2Client
) -> None:
    # Given SES rejects Mia's reminder
    f.repayment_due_to_two_borrowers()

    # When the run goes through
    with ses_faults(ses, lambda to: ses_error("MessageRejected", 400) if to == MIA else None):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then Ben's went out, but the repayment is not flagged
    assert (summary.sent, summary.failed) == (1, 1)
    assert not Repayment.get("rep-1").reminder_sent


def test_a_paid_repayment_with_a_malformed_paid_date_is_reported_by_field(
    service: Settings, ses: SESV2Client
) -> None:
    # (still marked pending: the CRM wrote a paid_date it could not parse either)
    f.repayment_due_to_two_borrowers(
        paid_date="yesterday", pending_check=REPAYMENTS_PENDING, next_notice_on=f.CHANGED_ON
    )

    summary = run("repayment_reminders", MONDAY, ses)

    assert sent_emails() == []
    assert summary.invalid_items == [
        {"item_id": "rep-1", "reason": "paid_date 'yesterday' is not a YYYY-MM-DD date"}
    ]


def test_a_malformed_due_date_is_reported_by_field_and_the_run_goes_on(
    service: Settings, ses: SESV2Client
) -> None:
    # Given the CRM marked rep-bad, whose due date is written the Australian way, next to
    # rep-1 (due in a week to Ben and Mia)
    f.repayment_due_to_two_borrowers()
    f.repayment("rep-bad", due_date="30/11/2026")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-bad is reported by id, naming the field and its value, and rep-1 goes out
    assert summary.invalid_items == [
        {"item_id": "rep-bad", "reason": "due_date '30/11/2026' is not a YYYY-MM-DD date"}
    ]
    assert sorted(m.recipients[0] for m in sent_emails()) == [BEN, MIA]
    assert not Repayment.get("rep-bad").reminder_sent


def test_a_paid_repayment_does_not_stop_the_run_reading_the_repayments_after_it(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-0 was paid (the CRM's mark sorts it first in the pending index) and rep-1,
    # due in a week, was moved to today by an earlier run
    f.repayment_due_to_two_borrowers(next_notice_on="2026-11-23")
    f.repayment(
        "rep-0",
        paid_date="2026-11-20",
        pending_check=REPAYMENTS_PENDING,
        next_notice_on=f.CHANGED_ON,
    )

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then both are read: rep-0 leaves the pending index and rep-1's reminders go out
    assert (summary.items_read, summary.sent) == (2, 2)
    assert sorted(m.recipients[0] for m in sent_emails()) == [BEN, MIA]
    assert Repayment.get("rep-1").reminder_sent is True
    assert "pending_check" not in Repayment.get("rep-0", consistent_read=True).attribute_values


def test_a_malformed_due_date_read_first_does_not_stop_the_run_reading_the_repayments_after_it(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-bad, whose due date is not a date (the CRM's mark sorts it first in the
    # pending index), and rep-1, due in a week, moved to today by an earlier run
    f.repayment_due_to_two_borrowers(next_notice_on="2026-11-23")
    f.repayment("rep-bad", due_date="30/11/2026", next_notice_on=f.CHANGED_ON)

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-bad is reported, and rep-1, read after it, goes out
    assert [item["item_id"] for item in summary.invalid_items] == ["rep-bad"]
    assert (summary.items_read, summary.sent) == (2, 2)
    assert sorted(m.recipients[0] for m in sent_emails()) == [BEN, MIA]


def test_a_repayment_whose_due_date_the_crm_changed_while_it_was_reminded_keeps_the_crms_mark(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 is due in a week (its reminders go out today), and the CRM moves its due
    # date to 10 December while they are being sent
    f.repayment_due_to_two_borrowers()

    def crm_changes_the_due_date(to: str) -> None:
        with another_actor():
            f.repayment("rep-1", due_date="2026-12-10")

    # When the repayment check runs
    with ses_faults(ses, crm_changes_the_due_date):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then the reminders went out and are flagged, but rep-1 keeps the CRM's mark (looked
    # at next run, for its new date), not the move to the old date's overdue day (3/12)
    assert summary.sent == 2
    rep_1 = Repayment.get("rep-1", consistent_read=True)
    assert (rep_1.due_date, rep_1.reminder_sent) == ("2026-12-10", True)
    assert (rep_1.pending_check, rep_1.next_notice_on) == (REPAYMENTS_PENDING, f.CHANGED_ON)


def test_a_flag_waits_for_a_notice_another_run_holds_then_follows_it(
    service: Settings, ses: SESV2Client
) -> None:
    # Given another run holds Mia's reminder while this one sends Ben's
    f.repayment_due_to_two_borrowers()
    mia = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")
    claim = ledger.Claim(mia, "repayment_upcoming", "rep-1", "bor-2", MIA, "2026-11-23", "t")
    assert ledger.claim(claim, "other-run", MONDAY)

    # When this run goes through, and the other run then records Mia's as sent
    summary = run("repayment_reminders", MONDAY, ses)
    flagged_before = Repayment.get("rep-1").reminder_sent
    ledger.mark_sent(mia, "other-run", "Upcoming", "msg-1", MONDAY)

    # Then this run did not flag the repayment: one of its notices was not sent yet
    assert (summary.sent, summary.skipped) == (1, 1)
    assert [m.recipients for m in sent_emails()] == [[BEN]]
    assert not flagged_before


def test_a_flag_follows_a_held_notice_that_its_run_sent_meanwhile(
    service: Settings, ses: SESV2Client
) -> None:
    # Given another run holds Mia's reminder and records it as sent while this run sends Ben's
    f.repayment_due_to_two_borrowers()
    mia = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")
    claim = ledger.Claim(mia, "repayment_upcoming", "rep-1", "bor-2", MIA, "2026-11-23", "t")
    assert ledger.claim(claim, "other-run", MONDAY)

    def other_run_finishes(to: str) -> None:
        with another_actor():
            ledger.mark_sent(mia, "other-run", "Upcoming", "msg-1", MONDAY)

    # When this run goes through
    with ses_faults(ses, other_run_finishes):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then it re-reads Mia's entry, finds it sent and flags the repayment
    assert (summary.sent, summary.skipped) == (1, 1)
    assert Repayment.get("rep-1").reminder_sent is True


def test_a_flag_follows_a_notice_another_run_claimed_and_sent_after_this_run_read_it(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 due to Ben and Mia, and another run that claims and sends Mia's reminder
    # after this run read the ledger (nothing there yet) and before it claims hers
    f.repayment_due_to_two_borrowers()
    mia = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")
    client = Notification._get_connection().connection.client
    raced: list[str] = []

    def other_run_first(params: dict[str, Any], **_: object) -> None:
        if raced or json.loads(params["body"])["Key"]["id"]["S"] != mia:
            return
        raced.append(mia)
        claim = ledger.Claim(mia, "repayment_upcoming", "rep-1", "bor-2", MIA, "2026-11-23", "t")
        with another_actor():
            assert ledger.claim(claim, "other-run", MONDAY)
            ledger.mark_sent(mia, "other-run", "Upcoming", "msg-1", MONDAY)

    # When this run goes through
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", other_run_first)
    try:
        summary = run("repayment_reminders", MONDAY, ses)
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", other_run_first)

    # Then its claim of Mia's was refused, it sent Ben's only, and, reading Mia's entry
    # again, found it sent and flagged the repayment
    assert raced == [mia]
    assert (summary.sent, summary.skipped) == (1, 1)
    assert [m.recipients for m in sent_emails()] == [[BEN]]
    assert Repayment.get("rep-1", consistent_read=True).reminder_sent is True


def test_a_dry_run_of_the_repayment_check_sets_no_flag(service: Settings, ses: SESV2Client) -> None:
    f.repayment_due_to_two_borrowers()

    summary = run("repayment_reminders", MONDAY, dry_run=True)

    assert [w["recipient_email"] for w in summary.would_send] == [BEN, MIA]
    assert sent_emails() == []
    assert not Repayment.get("rep-1").reminder_sent


def test_a_severer_notice_still_pending_does_not_supersede_a_milder_one(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1's overdue notice to Ben was throttled on 3 December (left pending)
    f.crm()
    f.application()
    f.repayment()
    throttled = ses_faults(ses, lambda to: ses_error("TooManyRequestsException", 429))
    with throttled, pytest.raises(DeliveryIncomplete):
        run("repayment_reminders", sydney("2026-12-03 09:00"), ses)

    # When a run for 30 November happens afterwards
    late = run_check(
        "repayment_reminders", at=sydney("2026-11-30 12:00"), now=sydney("2026-12-03 10:00")
    )

    # Then Ben still gets the upcoming reminder: nothing severer reached him
    assert late.sent == 1
    assert [m.subject for m in sent_emails()] == [
        "Upcoming Repayment Reminder: APP-1001 due 30/11/2026"
    ]


@pytest.mark.parametrize(
    ("due", "says"),
    [("2026-11-30", "(in 7 days)"), ("2026-11-24", "(tomorrow)"), ("2026-11-23", "(today)")],
    ids=["week", "tomorrow", "today"],
)
def test_an_upcoming_reminder_says_how_many_days_until_the_due_date(
    service: Settings, ses: SESV2Client, due: str, says: str
) -> None:
    f.crm()
    f.application()
    f.repayment(due_date=due)

    run("repayment_reminders", MONDAY, ses)

    [sent] = sent_emails()
    assert says in sent.text


def test_the_repayment_check_reads_a_repayment_again_only_when_its_next_notice_is_due(
    service: Settings, ses: SESV2Client
) -> None:
    # Given repayments 17 days overdue (last escalation day), 18 days overdue, and due in
    # 7 and 8 days, all just written by the CRM
    f.crm()
    f.application()
    for n, due in enumerate(("2026-11-06", "2026-11-05", "2026-11-30", "2026-12-01")):
        f.repayment(f"rep-{n}", due_date=due)

    # When the repayment check runs, and again an hour later
    summary = run("repayment_reminders", MONDAY, ses)
    rerun = run("repayment_reminders", sydney("2026-11-23 10:00"), ses)

    # Then the first run read all four and sent the two inside the windows; each is moved
    # to the day its next notice is due (the 18-day one and the escalated one: never)
    assert (summary.items_read, summary.sent) == (4, 2)
    looks = {r.id: (r.pending_check, r.next_notice_on) for r in Repayment.scan()}
    assert looks == {
        "rep-0": (None, None),
        "rep-1": (None, None),
        "rep-2": (REPAYMENTS_PENDING, "2026-12-03"),
        "rep-3": (REPAYMENTS_PENDING, "2026-11-24"),
    }
    # and the rerun reads none of them
    assert (rerun.items_read, rerun.sent) == (0, 0)

    # When the next day's run goes through, rep-3 (due in 7 days then) alone is read
    tuesday = run("repayment_reminders", sydney("2026-11-24 09:00"), ses)
    assert (tuesday.items_read, tuesday.sent) == (1, 1)
    assert Repayment.get("rep-3").reminder_sent is True


def test_a_run_by_hand_for_an_earlier_date_finds_a_repayment_moved_past_it(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1, due Mon 30/11, not reminded: the run of Tue 1/12 (day 1, between the
    # windows) moved it to its overdue notice's day, Thu 3/12
    f.repayment_due_to_two_borrowers()
    assert run("repayment_reminders", sydney("2026-12-01 09:00"), ses).sent == 0
    assert Repayment.get("rep-1").next_notice_on == "2026-12-03"

    # When an operator runs the check for 30 November (its last upcoming day) on 1/12
    summary = run(
        "repayment_reminders", sydney("2026-11-30 12:00"), ses, now=sydney("2026-12-01 10:00")
    )

    # Then it still finds rep-1 and sends that day's upcoming reminders
    assert summary.sent == 2
    assert {e.subject for e in sent_emails()} == {
        "Upcoming Repayment Reminder: APP-1001 due 30/11/2026"
    }


def test_a_run_by_hand_for_a_later_date_moves_nothing_past_today(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 due Mon 30/11 (its upcoming reminder due today, Mon 23/11)
    f.repayment_due_to_two_borrowers()

    # When an operator runs the check for Tue 1/12 (nothing due then) on Monday, and
    # Monday's scheduled run goes after it
    ahead = run("repayment_reminders", sydney("2026-12-01 12:00"), ses, now=MONDAY)
    today = run("repayment_reminders", MONDAY, ses)

    # Then the run for 1/12 sent nothing and left rep-1 where the CRM put it, so
    # Monday's run still sends its upcoming reminders
    assert ahead.sent == 0
    assert today.sent == 2


def test_a_repayment_the_crm_changed_during_the_run_keeps_the_crms_mark_and_is_logged(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given rep-1 is due in a week (its reminder goes out today) and rep-2 only on 20
    # December (nothing due today: the run moves it to its reminder's day), and the CRM
    # brings rep-2's due date forward while rep-1's reminders are being sent
    f.repayment_due_to_two_borrowers()
    f.repayment("rep-2", due_date="2026-12-20")

    def crm_changes_rep_2(to: str) -> None:
        with another_actor():
            f.repayment("rep-2", due_date="2026-12-01")

    # When the repayment check runs
    with ses_faults(ses, crm_changes_rep_2):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-2 keeps the CRM's mark (looked at next run), not the run's move to 13 December
    assert summary.sent == 2
    rep_2 = Repayment.get("rep-2", consistent_read=True)
    assert (rep_2.due_date, rep_2.pending_check, rep_2.next_notice_on) == (
        "2026-12-01",
        REPAYMENTS_PENDING,
        f.CHANGED_ON,
    )
    # and the repayment left pending is logged with what an operator needs
    [record] = logged(stdout_json, "repayment left pending")
    assert (record["level"], record["check"], record["item_id"], record["error"]) == (
        "INFO",
        "repayment_reminders",
        "rep-2",
        "UpdateError",
    )


def test_a_repayment_with_nothing_due_today_is_moved_to_its_next_notice(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given rep-1, due on 20 December, newly marked by the CRM
    f.repayment_due_to_two_borrowers(due_date="2026-12-20")

    # When the repayment check runs on 23 November
    summary = run("repayment_reminders", MONDAY, ses)

    # Then nothing is sent and rep-1 is next looked at on 13 December, its reminder's day
    assert summary.sent == 0
    rep_1 = Repayment.get("rep-1", consistent_read=True)
    assert (rep_1.pending_check, rep_1.next_notice_on) == (REPAYMENTS_PENDING, "2026-12-13")
    assert logged(stdout_json, "repayment left pending") == []


def test_a_repayment_reminded_before_its_due_date_is_next_looked_at_when_it_falls_overdue(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1, due on Thursday 26 November, whose upcoming reminder went out last week
    f.repayment_due_to_two_borrowers(due_date="2026-11-26", reminder_sent=True)

    # When the repayment check runs on Monday (inside the upcoming window it already had)
    summary = run("repayment_reminders", MONDAY, ses)

    # Then nothing is sent, and rep-1 is next looked at when its first overdue notice is due
    assert summary.sent == 0
    rep_1 = Repayment.get("rep-1", consistent_read=True)
    assert (rep_1.pending_check, rep_1.next_notice_on) == (REPAYMENTS_PENDING, "2026-11-29")


def test_each_bdm_is_sent_a_digest_of_their_own_escalations_only(
    service: Settings, ses: SESV2Client
) -> None:
    # Given repayments ten days overdue on app-1 (BDM Brooke) and on app-2 (BDM Blake)
    f.crm()
    f.second_bdm()
    f.application("app-1", reference_number="APP-1001")
    f.application("app-2", reference_number="APP-1002", bd_id="bdm-2")
    f.repayment("rep-1", application_id="app-1", due_date="2026-11-13")
    f.repayment("rep-2", application_id="app-2", due_date="2026-11-13")

    # When the repayment check runs
    run("repayment_reminders", MONDAY, ses)

    # Then Brooke and Blake each get one escalation, about their own application
    escalations = {
        m.recipients[0]: m.subject for m in sent_emails() if m.subject.startswith("ESCALATION")
    }
    assert escalations == {
        BROOKE: "ESCALATION: 10 Days Overdue Repayment: APP-1001",
        BLAKE: "ESCALATION: 10 Days Overdue Repayment: APP-1002",
    }


def test_a_paid_repayment_leaves_the_pending_index(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given rep-1 was paid, and the CRM marked it for the next run
    f.repayment_due_to_two_borrowers(
        paid_date="2026-11-20", pending_check=REPAYMENTS_PENDING, next_notice_on=f.CHANGED_ON
    )

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then nothing is sent and rep-1 is out of the pending index: no run reads it again
    assert summary.sent == 0
    marks = Repayment.get("rep-1", consistent_read=True).attribute_values
    assert "pending_check" not in marks
    assert "next_notice_on" not in marks
    assert logged(stdout_json, "repayment left pending") == []


def test_a_payment_the_crm_reversed_during_the_run_keeps_the_repayment_pending(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 is due in a week (its reminder goes out today) and rep-2 was paid, and
    # the CRM reverses rep-2's payment while rep-1's reminders are being sent
    f.repayment_due_to_two_borrowers()
    f.repayment(
        "rep-2",
        paid_date="2026-11-20",
        pending_check=REPAYMENTS_PENDING,
        next_notice_on=f.CHANGED_ON,
    )

    def crm_reverses_the_payment(to: str) -> None:
        with another_actor():
            f.repayment("rep-2")

    # When the repayment check runs
    with ses_faults(ses, crm_reverses_the_payment):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-2 stays in the pending index with the CRM's mark: the next run reminds it
    assert summary.sent == 2
    rep_2 = Repayment.get("rep-2", consistent_read=True)
    assert rep_2.paid_date is None
    assert (rep_2.pending_check, rep_2.next_notice_on) == (REPAYMENTS_PENDING, f.CHANGED_ON)
