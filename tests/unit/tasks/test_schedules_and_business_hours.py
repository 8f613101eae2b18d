"""Scheduling: the registered hourly schedules, the business-hours gate, time zones and DST.

EventBridge fires every check at the top of every UTC hour; each check acts only
from its local start time (repayments 07:00, notes 08:00, stale applications
09:00 Sydney time) until 20:00 local, and "today" is the Sydney date.
"""

from __future__ import annotations

import importlib
from datetime import date, datetime, timedelta

import pytest
from chalice.app import ScheduledEventConfig, ScheduleExpression
from mypy_boto3_sesv2 import SESV2Client
from pynamodb.exceptions import DoesNotExist

import app
from chalicelib.config import Settings
from chalicelib.models import Notification, Repayment
from tests import factories
from tests.support import SYDNEY, ledger_key, run, sent_emails, subjects_by_recipient, sydney, utc

pytestmark = [pytest.mark.task, pytest.mark.scheduling]

CHECKS = ("stale_applications", "note_reminders", "repayment_reminders")
BROOKE = "brooke.davis@lender.example.com.au"
SAM = "sam.author@lender.example.com.au"
BEN = "ben.lee@example.net"
NOTE_SUBJECT = "Note Reminder: Call the valuer"

# The local start of each check's window, as documented.
START_HOUR = {"repayment_reminders": 7, "note_reminders": 8, "stale_applications": 9}


def seed_due_notice(check: str, today: date) -> dict[str, list[str]]:
    """Seed a CRM with one notice of ``check`` due on ``today``; return what it should send."""
    factories.crm()
    if check == "stale_applications":
        changed = today - timedelta(days=20)
        factories.application(stage_last_updated=f"{changed.isoformat()}T10:00:00+10:00")
        return {BROOKE: ["Stale Application Alert: APP-1001"]}
    factories.application()
    if check == "note_reminders":
        factories.note(remind_date=today.isoformat())
        return {SAM: [NOTE_SUBJECT], BROOKE: [NOTE_SUBJECT]}
    due = today + timedelta(days=3)
    factories.repayment(due_date=due.isoformat())
    return {BEN: [f"Upcoming Repayment Reminder: APP-1001 due {due:%d/%m/%Y}"]}


def acting_runs(check: str, ses: SESV2Client, instants: list[datetime]) -> list[datetime]:
    """Run ``check`` at each instant in turn; return the instants at which it acted."""
    return [at for at in instants if run(check, at, ses).acted]


def hourly(first: datetime, count: int) -> list[datetime]:
    """``count`` hourly EventBridge triggers starting at ``first``."""
    return [first + timedelta(hours=n) for n in range(count)]


# --- the registered schedules ------------------------------------------------------------


def test_each_check_is_registered_as_an_hourly_utc_schedule() -> None:
    sources = {
        source.name: source
        for source in app.app.event_sources
        if isinstance(source, ScheduledEventConfig)
    }

    assert set(sources) == {
        "check_stale_applications",
        "check_note_reminders",
        "check_repayment_reminders",
    }
    for name, source in sources.items():
        assert isinstance(source, ScheduledEventConfig)
        assert isinstance(source.schedule_expression, ScheduleExpression)
        assert source.schedule_expression.to_string() == "cron(0 * * * ? *)"
        assert source.handler_string == f"app.{name}"
        assert source.description


def test_each_schedule_handler_string_resolves_to_a_registered_lambda() -> None:
    for source in app.app.event_sources:
        module_name, attribute = source.handler_string.rsplit(".", 1)
        handler = getattr(importlib.import_module(module_name), attribute)

        assert callable(handler)
        assert app.app.handler_map[source.name] is handler


# --- the business-hours gate -------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS)
def test_each_check_acts_only_from_its_start_time_until_2000(
    service: Settings, ses: SESV2Client, check: str
) -> None:
    # Given a notice that is due today
    start = START_HOUR[check]
    expected = seed_due_notice(check, date(2026, 11, 23))

    # When the check runs at 20:00 and an hour before its start
    late = run(check, sydney("2026-11-23 20:00"), ses)
    early = run(check, sydney(f"2026-11-23 {start - 1:02d}:00"), ses)

    # Then both runs do nothing and say so
    for summary in (late, early):
        assert summary.acted is False
        assert summary.business_date == "2026-11-23"
        assert (summary.items_read, summary.notices_due, summary.sent) == (0, 0, 0)
    assert sent_emails() == []

    # When it runs at its start time, the notice goes out
    on_time = run(check, sydney(f"2026-11-23 {start:02d}:00"), ses)

    assert on_time.acted is True
    assert on_time.sent == sum(len(subjects) for subjects in expected.values())
    assert subjects_by_recipient() == expected


def test_an_early_morning_repayment_run_sends_nothing_and_the_0700_run_sends(
    service: Settings, ses: SESV2Client
) -> None:
    factories.crm()
    factories.application()
    factories.repayment(due_date="2026-11-30")

    at_six = run("repayment_reminders", sydney("2026-11-23 06:00"), ses)

    assert at_six.acted is False
    assert sent_emails() == []
    with pytest.raises(DoesNotExist):
        Notification.get(ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1"))
    assert Repayment.get("rep-1").reminder_sent is None

    at_seven = run("repayment_reminders", sydney("2026-11-23 07:00"), ses)

    assert at_seven.acted is True
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }
    assert Repayment.get("rep-1").reminder_sent is True


def test_the_last_second_before_2000_is_still_inside_the_window(
    service: Settings, ses: SESV2Client
) -> None:
    seed_due_notice("note_reminders", date(2026, 11, 23))

    summary = run("note_reminders", sydney("2026-11-23 19:59:59"), ses)

    assert summary.acted is True
    assert len(sent_emails()) == 2


def test_a_note_added_at_1100_for_today_goes_out_at_the_1200_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note for today, reminded by the 08:00 run
    factories.crm()
    factories.application()
    factories.note("note-1", remind_date="2026-11-23")
    run("note_reminders", sydney("2026-11-23 08:00"), ses)
    run("note_reminders", sydney("2026-11-23 11:00"), ses)
    assert len(sent_emails()) == 2

    # When a second note for today is added at 11:00 (after the 11:00 run)
    factories.note(
        "note-2",
        title="Send the loan docs",
        remind_date="2026-11-23",
        created_at="2026-11-23T11:00:00+11:00",
    )
    summary = run("note_reminders", sydney("2026-11-23 12:00"), ses)

    # Then the 12:00 run reads and reminds the new note only (note-1 left the pending index)
    assert summary.acted is True
    assert summary.sent == 2
    assert (summary.items_read, summary.skipped) == (1, 0)
    assert [e.subject for e in sent_emails()[2:]] == [
        "Note Reminder: Send the loan docs",
        "Note Reminder: Send the loan docs",
    ]
    assert subjects_by_recipient() == {
        SAM: [NOTE_SUBJECT, "Note Reminder: Send the loan docs"],
        BROOKE: [NOTE_SUBJECT, "Note Reminder: Send the loan docs"],
    }


def test_runs_through_a_whole_day_act_only_inside_the_window_and_send_once(
    service: Settings, ses: SESV2Client
) -> None:
    seed_due_notice("note_reminders", date(2026, 11, 23))
    # Local midnight 23 Nov (AEDT, UTC+11) is 13:00 UTC on 22 Nov.
    triggers = hourly(utc("2026-11-22 13:00"), 24)

    acted = acting_runs("note_reminders", ses, triggers)

    assert [at.astimezone(SYDNEY).hour for at in acted] == list(range(8, 20))
    assert subjects_by_recipient() == {SAM: [NOTE_SUBJECT], BROOKE: [NOTE_SUBJECT]}


@pytest.mark.parametrize(
    ("check", "variable", "value", "closed", "open_"),
    [
        ("repayment_reminders", "REPAYMENT_REMINDERS_START", "06:00", "05:00", "06:00"),
        ("note_reminders", "NOTE_REMINDERS_START", "10:30", "10:00", "11:00"),
        ("stale_applications", "STALE_APPLICATIONS_START", "11:00", "10:00", "11:00"),
        ("note_reminders", "BUSINESS_DAY_END", "17:00", "17:00", "16:00"),
    ],
)
def test_the_window_is_configurable_through_the_environment(
    service: Settings,
    ses: SESV2Client,
    monkeypatch: pytest.MonkeyPatch,
    check: str,
    variable: str,
    value: str,
    closed: str,
    open_: str,
) -> None:
    expected = seed_due_notice(check, date(2026, 11, 23))
    monkeypatch.setenv(variable, value)

    assert run(check, sydney(f"2026-11-23 {closed}"), ses).acted is False
    assert sent_emails() == []

    assert run(check, sydney(f"2026-11-23 {open_}"), ses).acted is True
    assert subjects_by_recipient() == expected


def test_ignore_window_bypasses_the_gate(service: Settings, ses: SESV2Client) -> None:
    seed_due_notice("note_reminders", date(2026, 11, 23))

    gated = run("note_reminders", sydney("2026-11-23 03:00"), ses)
    assert gated.acted is False
    assert sent_emails() == []

    forced = run("note_reminders", sydney("2026-11-23 03:00"), ses, ignore_window=True)

    assert forced.acted is True
    assert forced.business_date == "2026-11-23"
    assert subjects_by_recipient() == {SAM: [NOTE_SUBJECT], BROOKE: [NOTE_SUBJECT]}


# --- "today" is the business date --------------------------------------------------------


def test_notes_use_the_sydney_date_when_the_utc_date_is_the_day_before(
    service: Settings, ses: SESV2Client
) -> None:
    # Given notes around 23 Nov; 22:00 UTC on 22 Nov is 09:00 on 23 Nov in Sydney
    factories.crm()
    factories.application()
    factories.note("today", title="Today", remind_date="2026-11-23")
    factories.note("yesterday", title="Yesterday", remind_date="2026-11-22")
    factories.note("three-back", title="Three back", remind_date="2026-11-20")
    factories.note("four-back", title="Four back", remind_date="2026-11-19")
    factories.note("tomorrow", title="Tomorrow", remind_date="2026-11-24")

    # When the check runs at that instant
    summary = run("note_reminders", utc("2026-11-22 22:00"), ses)

    # Then 23 Nov is today: its note and the catch-up ones are reminded, not 24 Nov's
    assert summary.acted is True
    assert summary.business_date == "2026-11-23"
    subjects = sorted({e.subject for e in sent_emails()})
    assert subjects == [
        "Note Reminder: Three back",
        "Note Reminder: Today",
        "Note Reminder: Yesterday",
    ]
    assert len(sent_emails()) == 6
    entry = Notification.get(ledger_key("note_reminders", "today", "2026-11-23", "staff-2"))
    assert entry.status == "sent"
    assert entry.business_date == "2026-11-23"
    catch_up = Notification.get(ledger_key("note_reminders", "yesterday", "2026-11-22", "bdm-1"))
    assert catch_up.status == "sent"
    assert catch_up.business_date == "2026-11-23"


def test_repayments_use_the_sydney_date_when_the_utc_date_is_the_day_before(
    service: Settings, ses: SESV2Client
) -> None:
    # Given repayments whose notice depends on whether today is 22 or 23 Nov
    factories.crm()
    factories.application()
    factories.repayment("in-7-days", due_date="2026-11-30")  # Sydney d=-7, UTC d=-8
    factories.repayment("3-days-late", due_date="2026-11-20")  # Sydney d=3, UTC d=2

    # When the repayment check runs at 22:00 UTC on 22 Nov (09:00 on 23 Nov in Sydney)
    summary = run("repayment_reminders", utc("2026-11-22 22:00"), ses)

    # Then both notices are due by the Sydney date
    assert summary.business_date == "2026-11-23"
    assert sorted(e.subject for e in sent_emails()) == [
        "OVERDUE Repayment Notice: APP-1001, 3 days overdue",
        "Upcoming Repayment Reminder: APP-1001 due 30/11/2026",
    ]
    assert Repayment.get("in-7-days").reminder_sent is True
    assert Repayment.get("3-days-late").overdue_3_day_sent is True


def test_stale_days_count_sydney_dates_not_utc_dates(service: Settings, ses: SESV2Client) -> None:
    # Given two applications whose stage changed on 9 Nov (Sydney) and on 10 Nov (Sydney)
    # -- the second one at 01:00 on 10 Nov in Sydney is still 9 Nov in UTC
    factories.crm()
    factories.application(
        "sydney-9th", reference_number="APP-9", stage_last_updated=("2026-11-08T23:30:00+00:00")
    )
    factories.application(
        "sydney-10th", reference_number="APP-10", stage_last_updated=("2026-11-09T14:00:00+00:00")
    )

    # When the stale check runs at 09:00 on 23 Nov in Sydney (22:00 UTC on 22 Nov)
    run("stale_applications", utc("2026-11-22 22:00"), ses)

    # Then only the one 14 Sydney days in stage is stale
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-9"]}
    assert "APP-9: Valuation Ordered, 14 days in stage" in sent_emails()[0].text


# --- daylight saving (Australia/Sydney) --------------------------------------------------
# DST starts Sun 4 Oct 2026 02:00 AEST -> 03:00 AEDT (UTC+10 -> UTC+11) and ends
# Sun 5 Apr 2026 03:00 AEDT -> 02:00 AEST (UTC+11 -> UTC+10).

FIRST_ACTING_TRIGGER = {
    # check: [(business day, first hourly UTC trigger that acts), ...]
    "stale_applications": [
        ("2026-10-03", "2026-10-02 23:00"),  # AEST: 09:00 is 23:00 UTC the day before
        ("2026-10-04", "2026-10-03 22:00"),  # AEDT from 02:00 today: 22:00 UTC
        ("2026-10-05", "2026-10-04 22:00"),
        ("2026-04-04", "2026-04-03 22:00"),  # AEDT until tomorrow 03:00
        ("2026-04-05", "2026-04-04 23:00"),  # AEST from 03:00 today: 23:00 UTC
        ("2026-04-06", "2026-04-05 23:00"),
    ],
    "note_reminders": [
        ("2026-10-03", "2026-10-02 22:00"),
        ("2026-10-04", "2026-10-03 21:00"),
        ("2026-04-04", "2026-04-03 21:00"),
        ("2026-04-05", "2026-04-04 22:00"),
    ],
    "repayment_reminders": [
        ("2026-10-03", "2026-10-02 21:00"),
        ("2026-10-04", "2026-10-03 20:00"),
        ("2026-04-04", "2026-04-03 20:00"),
        ("2026-04-05", "2026-04-04 21:00"),
    ],
}


@pytest.mark.parametrize("check", CHECKS)
def test_the_utc_trigger_that_opens_the_window_follows_daylight_saving(
    service: Settings, ses: SESV2Client, check: str
) -> None:
    for day, first in FIRST_ACTING_TRIGGER[check]:
        opens = utc(first)
        # The hourly triggers from two hours before the expected opening up to it
        triggers = hourly(opens - timedelta(hours=2), 3)

        acted = acting_runs(check, ses, triggers)

        assert acted == [opens], day
        assert opens.astimezone(SYDNEY).date().isoformat() == day
        assert opens.astimezone(SYDNEY).hour == START_HOUR[check]


@pytest.mark.parametrize(
    ("side", "closed", "open_"),
    [
        ("AEST, the day before DST starts", "2026-10-02 22:00", "2026-10-02 23:00"),
        ("AEDT, the day DST starts", "2026-10-03 21:00", "2026-10-03 22:00"),
        ("AEDT, the day before DST ends", "2026-04-03 21:00", "2026-04-03 22:00"),
        ("AEST, the day DST ends", "2026-04-04 22:00", "2026-04-04 23:00"),
    ],
)
def test_stale_alerts_go_out_at_the_utc_hour_that_is_0900_in_sydney(
    service: Settings, ses: SESV2Client, side: str, closed: str, open_: str
) -> None:
    business_day = utc(open_).astimezone(SYDNEY).date()
    expected = seed_due_notice("stale_applications", business_day)

    before = run("stale_applications", utc(closed), ses)
    assert before.acted is False, side
    assert sent_emails() == [], side

    at_nine = run("stale_applications", utc(open_), ses)

    assert at_nine.acted is True, side
    assert at_nine.business_date == business_day.isoformat()
    assert subjects_by_recipient() == expected


def test_the_window_closes_at_the_utc_hour_that_is_2000_in_sydney(
    service: Settings, ses: SESV2Client
) -> None:
    cases = [
        # (business day, last acting trigger = 19:00 local, first closed trigger = 20:00 local)
        ("2026-10-03", "2026-10-03 09:00", "2026-10-03 10:00"),  # AEST
        ("2026-10-04", "2026-10-04 08:00", "2026-10-04 09:00"),  # AEDT
        ("2026-04-04", "2026-04-04 08:00", "2026-04-04 09:00"),  # AEDT
        ("2026-04-05", "2026-04-05 09:00", "2026-04-05 10:00"),  # AEST
    ]
    for day, last_acting, first_closed in cases:
        assert run("note_reminders", utc(last_acting), ses).acted is True, day
        assert run("note_reminders", utc(first_closed), ses).acted is False, day
        assert utc(first_closed).astimezone(SYDNEY).strftime("%Y-%m-%d %H:%M") == f"{day} 20:00"


def test_the_dst_start_day_has_23_hourly_runs_and_each_notice_goes_once(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note for Sun 4 Oct 2026, the day the clocks go forward
    seed_due_notice("note_reminders", date(2026, 10, 4))
    # Local midnight is 14:00 UTC (AEST); the next local midnight is 13:00 UTC (AEDT)
    triggers = hourly(utc("2026-10-03 14:00"), 23)
    assert triggers[-1].astimezone(SYDNEY).strftime("%d %H:%M") == "04 23:00"

    # When every hourly trigger of that local day runs
    acted = acting_runs("note_reminders", ses, triggers)

    # Then 02:00 never happens, the check acts from 08:00 to 19:00, and sends once
    local_hours = [at.astimezone(SYDNEY).hour for at in triggers]
    assert 2 not in local_hours
    assert [at.astimezone(SYDNEY).hour for at in acted] == list(range(8, 20))
    assert acted[0] == utc("2026-10-03 21:00")
    assert subjects_by_recipient() == {SAM: [NOTE_SUBJECT], BROOKE: [NOTE_SUBJECT]}


def test_the_dst_end_day_has_25_hourly_runs_and_each_notice_goes_once(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note for Sun 5 Apr 2026, the day the clocks go back
    seed_due_notice("note_reminders", date(2026, 4, 5))
    # Local midnight is 13:00 UTC (AEDT); the next local midnight is 14:00 UTC (AEST)
    triggers = hourly(utc("2026-04-04 13:00"), 25)
    assert triggers[-1].astimezone(SYDNEY).strftime("%d %H:%M") == "05 23:00"

    acted = acting_runs("note_reminders", ses, triggers)

    local_hours = [at.astimezone(SYDNEY).hour for at in triggers]
    assert local_hours.count(2) == 2
    assert [at.astimezone(SYDNEY).hour for at in acted] == list(range(8, 20))
    assert acted[0] == utc("2026-04-04 22:00")
    assert subjects_by_recipient() == {SAM: [NOTE_SUBJECT], BROOKE: [NOTE_SUBJECT]}


def test_the_repeated_hour_on_the_dst_end_day_does_not_send_twice(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a window that includes 02:00 and a note due on Sun 5 Apr 2026
    monkeypatch.setenv("NOTE_REMINDERS_START", "00:00")
    seed_due_notice("note_reminders", date(2026, 4, 5))
    first, second = utc("2026-04-04 15:00"), utc("2026-04-04 16:00")
    assert first.astimezone(SYDNEY).strftime("%H:%M %Z") == "02:00 AEDT"
    assert second.astimezone(SYDNEY).strftime("%H:%M %Z") == "02:00 AEST"

    # When the check runs at 02:00 AEDT and again at 02:00 AEST
    earlier = run("note_reminders", first, ses)
    later = run("note_reminders", second, ses)

    # Then both runs have the same business date, and only the first one sends
    assert (earlier.acted, later.acted) == (True, True)
    assert earlier.business_date == later.business_date == "2026-04-05"
    assert (earlier.sent, later.sent, later.items_read) == (2, 0, 0)
    assert subjects_by_recipient() == {SAM: [NOTE_SUBJECT], BROOKE: [NOTE_SUBJECT]}
    entry = Notification.get(ledger_key("note_reminders", "note-1", "2026-04-05", "staff-2"))
    assert entry.status == "sent"
    assert entry.attempts == 1
    assert entry.sent_at == first


def test_the_repeated_hour_is_gated_the_same_both_times(
    service: Settings, ses: SESV2Client
) -> None:
    seed_due_notice("repayment_reminders", date(2026, 4, 5))

    assert run("repayment_reminders", utc("2026-04-04 15:00"), ses).acted is False
    assert run("repayment_reminders", utc("2026-04-04 16:00"), ses).acted is False
    assert sent_emails() == []


# --- another business time zone ----------------------------------------------------------


def test_a_perth_business_timezone_moves_the_gate(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the business runs on Perth time (AWST, UTC+8, no daylight saving)
    monkeypatch.setenv("BUSINESS_TIMEZONE", "Australia/Perth")
    expected = seed_due_notice("stale_applications", date(2026, 11, 23))

    # When the stale check runs at 00:00 UTC (08:00 Perth, 11:00 Sydney)
    early = run("stale_applications", utc("2026-11-23 00:00"), ses)

    # Then it waits for 09:00 Perth, which is 01:00 UTC
    assert early.acted is False
    assert sent_emails() == []
    on_time = run("stale_applications", utc("2026-11-23 01:00"), ses)
    assert on_time.acted is True
    assert on_time.business_date == "2026-11-23"
    assert subjects_by_recipient() == expected


def test_a_perth_business_day_ends_at_2000_perth_time(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUSINESS_TIMEZONE", "Australia/Perth")
    seed_due_notice("note_reminders", date(2026, 11, 23))

    # 09:00 UTC is 20:00 in Sydney (closed there) but 17:00 in Perth
    assert run("note_reminders", utc("2026-11-23 09:00"), ses).acted is True
    assert run("note_reminders", utc("2026-11-23 12:00"), ses).acted is False
    assert len(sent_emails()) == 2


def test_the_perth_business_date_lags_sydney(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 13:30 UTC on 22 Nov is 00:30 on 23 Nov in Sydney but 21:30 on 22 Nov in Perth
    monkeypatch.setenv("BUSINESS_TIMEZONE", "Australia/Perth")
    factories.crm()
    factories.application()
    factories.note("for-22nd", title="Perth today", remind_date="2026-11-22")
    factories.note("for-23rd", title="Perth tomorrow", remind_date="2026-11-23")

    summary = run("note_reminders", utc("2026-11-22 13:30"), ses, ignore_window=True)

    assert summary.business_date == "2026-11-22"
    assert {e.subject for e in sent_emails()} == {"Note Reminder: Perth today"}
