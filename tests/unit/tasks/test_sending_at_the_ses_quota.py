"""A run sends at its account's SES quota: paced at the maximum rate, never over 24 hours' quota.

SES's quota comes from ``GetAccount``, which moto lacks: ``tests/support.py: SES_ACCOUNT``
answers it at botocore's boundary (a generous account unless a test sets one). Sends
are paced on a fake clock, so no test waits.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import pytest
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger, models
from chalicelib.config import Settings
from chalicelib.delivery import WORKER_THREADS, DeliveryIncomplete
from chalicelib.models import Notification
from tests import factories as f
from tests.aws_recorder import another_actor
from tests.factories import BROOKE, SAM
from tests.support import (
    SES_ACCOUNT,
    FakeClock,
    ledger_key,
    ledger_notices,
    run,
    sent_emails,
    ses_error,
    ses_faults,
    sydney,
)

pytestmark = [pytest.mark.task, pytest.mark.execution]

Logs = Callable[[], list[dict[str, Any]]]

MONDAY = sydney("2026-11-23 09:00")
TUESDAY = sydney("2026-11-24 09:00")


def notes(count: int) -> list[str]:
    """``count`` notes due Monday, each to its author Sam and the BDM Brooke; their keys."""
    f.crm()
    f.application()
    keys = []
    for n in range(count):
        f.note(f"note-{n}", title=f"Note {n}")
        keys += [
            ledger_key("note_reminders", f"note-{n}", "2026-11-23", "staff-2"),
            ledger_key("note_reminders", f"note-{n}", "2026-11-23", "bdm-1"),
        ]
    return keys


def statuses() -> Counter[str]:
    """How many ledger entries are in each status."""
    return Counter(str(e.status) for e in ledger_notices())


def logged(logs: Logs, message: str) -> list[dict[str, Any]]:
    return [record for record in logs() if record.get("message") == message]


def test_a_run_reads_its_send_quota_once_and_sends_every_notice_once(
    service: Settings, ses: SESV2Client
) -> None:
    # Given 30 notes due, 60 notices, on an account allowed 1,000 emails a second
    notes(30)

    # When the run sends them (from its workers on DynamoDB Local, from one on moto)
    summary = run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then SES was asked for the quota once, and every notice went out once, counted once
    assert SES_ACCOUNT.calls == 1
    assert (summary.notices_due, summary.sent, summary.emails_sent) == (60, 60, 60)
    assert (summary.skipped, summary.quota_deferred, summary.throttled) == (0, 0, 0)
    assert summary.send_rate == 950.0
    assert summary.quota_remaining == 1_000_000
    sent = Counter((tuple(e.recipients), e.subject) for e in sent_emails())
    assert len(sent) == 60
    assert set(sent.values()) == {1}
    assert statuses() == {ledger.SENT: 60}


def test_a_run_with_nothing_to_send_does_not_ask_ses_for_its_quota(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note whose reminders went out in the 09:00 run
    notes(1)
    run("note_reminders", MONDAY, ses)

    # When the 10:00 run looks again (the settled note left the pending index)
    summary = run("note_reminders", sydney("2026-11-23 10:00"), ses)

    # Then it asked SES nothing more
    assert (summary.items_read, summary.sent) == (0, 0)
    assert SES_ACCOUNT.calls == 1
    assert summary.send_rate == 0.0


def test_sends_are_paced_at_the_accounts_maximum_rate(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an account allowed 2 emails a second, used in full, and 3 notes (6 notices),
    # sent from one worker: the fake clock moves when any thread sleeps on it, so two
    # workers sleeping at once would move it twice (the pacer's threads: test_sending.py)
    monkeypatch.setenv("SEND_RATE_PERCENT", "100")
    monkeypatch.setenv("SEND_CONCURRENCY", "1")
    SES_ACCOUNT.max_send_rate = 2.0
    notes(3)
    clock = FakeClock(50.0)
    times: list[float] = []

    def stamp(**_: object) -> None:
        times.append(clock.monotonic())

    # When the run sends them
    ses.meta.events.register("before-call.sesv2.SendEmail", stamp)
    try:
        summary = run("note_reminders", MONDAY, ses, clock=clock)
    finally:
        ses.meta.events.unregister("before-call.sesv2.SendEmail", stamp)

    # Then SES never got more than 2 in one second (the second of each pair went 200 ms
    # early, catching up as the pacer may, and the window held the next one back)
    assert summary.sent == 6
    assert sorted(times) == pytest.approx([50.0, 50.3, 51.0, 51.3, 52.0, 52.3])


def test_a_run_stops_at_the_24_hour_quota_and_leaves_the_rest_due_unclaimed(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given 4 notes due (8 notices) and an account with 3 emails left of its 24-hour quota
    keys = notes(4)
    SES_ACCOUNT.max_24_hour_send = 200
    SES_ACCOUNT.sent_last_24_hours = 197

    # When the run goes through
    summary = run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then it sent 3 emails and left 5 notices due, counted, logged and not even claimed
    assert (summary.notices_due, summary.sent, summary.emails_sent) == (8, 3, 3)
    assert (summary.quota_deferred, summary.deferred, summary.retrying) == (5, 0, 0)
    assert summary.quota_remaining == 3
    assert len(sent_emails()) == 3
    assert statuses() == {ledger.SENT: 3}
    [record] = logged(stdout_json, "24-hour SES quota reached, notices left due")
    assert (record["level"], record["check"], record["quota_deferred"]) == (
        "WARNING",
        "note_reminders",
        5,
    )
    assert record["quota_remaining_at_start"] == 3
    left = set(record["keys"])
    assert len(left) == 5
    assert left <= set(keys)
    assert all(Notification.get(k).status == ledger.SENT for k in set(keys) - left)

    # When the quota has room again, the next run sends exactly those 5
    SES_ACCOUNT.sent_last_24_hours = 0
    again = run("note_reminders", sydney("2026-11-23 10:00"), ses, clock=FakeClock())
    # (notes whose reminders all went out are not read again: only the others' sent
    # reminders are counted as skipped)
    assert (again.sent, again.quota_deferred) == (5, 0)
    assert again.skipped < 3
    sent = Counter((tuple(e.recipients), e.subject) for e in sent_emails())
    assert len(sent) == 8
    assert set(sent.values()) == {1}
    assert statuses() == {ledger.SENT: 8}


def test_a_digest_takes_one_email_of_the_quota_for_all_its_applications(
    service: Settings, ses: SESV2Client
) -> None:
    # Given three stale applications for Brooke and one email left of the 24-hour quota
    f.crm()
    for n in range(3):
        f.application(f"app-{n}", reference_number=f"APP-{n}")
    SES_ACCOUNT.max_24_hour_send = 10
    SES_ACCOUNT.sent_last_24_hours = 9

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses, clock=FakeClock())

    # Then the one digest covers all three
    assert (summary.sent, summary.emails_sent, summary.quota_deferred) == (3, 1, 0)
    [digest] = sent_emails()
    assert digest.recipients == [BROOKE]
    assert digest.subject == "Stale Application Alert: 3 applications"


def test_an_account_whose_sending_is_paused_sends_nothing_and_leaves_everything_due(
    service: Settings, ses: SESV2Client
) -> None:
    notes(2)
    SES_ACCOUNT.sending_enabled = False

    summary = run("note_reminders", MONDAY, ses, clock=FakeClock())

    assert (summary.sent, summary.quota_deferred, summary.quota_remaining) == (0, 4, 0)
    assert sent_emails() == []
    assert statuses() == Counter()


def test_a_run_whose_quota_cannot_be_read_sends_at_the_fallback_rate(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given GetAccount is denied, and a note due to Sam and Brooke
    SES_ACCOUNT.error = ses_error("AccessDeniedException", 403)
    notes(1)
    clock = FakeClock()

    # When the run goes through
    summary = run("note_reminders", MONDAY, ses, clock=clock)

    # Then both went out, paced at 95 % of one a second, and the error is logged
    assert summary.sent == 2
    assert summary.send_rate == 0.95
    assert summary.quota_remaining is None
    assert clock.slept == pytest.approx([1 / 0.95])
    logs = stdout_json()
    [record] = logged(lambda: logs, "SES send quota not read, sending at the fallback rate")
    assert (record["level"], record["check"], record["error"], record["rate"]) == (
        "ERROR",
        "note_reminders",
        "AccessDeniedException",
        1.0,
    )
    [pace] = logged(lambda: logs, "sending paced at the SES quota")
    # (Powertools leaves out the fields that are None)
    assert (pace.get("max_send_rate"), pace["rate"], pace.get("quota_remaining")) == (
        None,
        0.95,
        None,
    )


def test_a_run_logs_the_pace_it_took_from_the_accounts_quota(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given an account allowed 0.6172 emails a second (SES reports fractions), 1,000,000
    # a day with none sent yet, and a note due to Sam and Brooke
    SES_ACCOUNT.max_send_rate = 0.6172
    notes(1)

    # When the run goes through
    summary = run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then it paced at 95 % of that rate, to three places, from one worker, and said so
    assert summary.send_rate == 0.586
    [record] = logged(stdout_json, "sending paced at the SES quota")
    fields = ("level", "check", "max_send_rate", "rate", "quota_remaining", "workers")
    assert {name: record.get(name) for name in fields} == {
        "level": "INFO",
        "check": "note_reminders",
        "max_send_rate": 0.6172,
        "rate": 0.586,
        "quota_remaining": 1_000_000,
        "workers": 1,
    }


def test_a_throttled_send_is_counted_and_left_due(service: Settings, ses: SESV2Client) -> None:
    # Given SES throttles the send to Sam
    keys = notes(1)
    throttled = ses_error("Throttling", 400, "Maximum sending rate exceeded.")

    # When the run goes through
    with (
        ses_faults(ses, lambda to: throttled if to == SAM else None),
        pytest.raises(DeliveryIncomplete) as raised,
    ):
        run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then the throttled attempt is counted, and Sam's reminder is due again
    summary = raised.value.summary
    assert (summary.throttled, summary.retrying, summary.sent) == (1, 1, 1)
    assert Notification.get(keys[0]).status == ledger.PENDING
    assert [e.recipients for e in sent_emails()] == [[BROOKE]]


def test_a_run_that_ses_throttles_halves_its_pace(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch, stdout_json: Logs
) -> None:
    # Given an account allowed 2 emails a second, used in full, one send at a time,
    # and another sender that makes SES throttle the run's first send
    monkeypatch.setenv("SEND_RATE_PERCENT", "100")
    monkeypatch.setenv("SEND_CONCURRENCY", "1")
    SES_ACCOUNT.max_send_rate = 2.0
    notes(2)
    clock = FakeClock(50.0)
    times: list[float] = []

    def stamp(**_: object) -> None:
        times.append(clock.monotonic())

    throttled = ses_error("Throttling", 400, "Maximum sending rate exceeded.")
    ses.meta.events.register("before-call.sesv2.SendEmail", stamp)
    try:
        # When the run sends the 4 notices
        with (
            ses_faults(ses, lambda to: throttled if len(times) == 1 else None),
            pytest.raises(DeliveryIncomplete),
        ):
            run("note_reminders", MONDAY, ses, clock=clock)
    finally:
        ses.meta.events.unregister("before-call.sesv2.SendEmail", stamp)

    # Then after the throttle it sends one a second instead of two, and says so
    assert times == pytest.approx([50.0, 51.0, 52.0, 53.0])
    assert len(sent_emails()) == 3
    [record] = logged(stdout_json, "SES throttled the run, pacing slower")
    assert (record["level"], record["rate"]) == ("WARNING", 1.0)


def test_each_throttle_halves_the_pace_down_to_the_fallback_rate_and_no_lower(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch, stdout_json: Logs
) -> None:
    # Given an account allowed 10 emails a second, used at 95 %, one send at a time, and
    # another sender that makes SES throttle every send of the run's 4 notices
    monkeypatch.setenv("SEND_RATE_PERCENT", "95")
    monkeypatch.setenv("SEND_CONCURRENCY", "1")
    SES_ACCOUNT.max_send_rate = 10.0
    notes(2)
    throttled = ses_error("Throttling", 400, "Maximum sending rate exceeded.")

    # When the run tries to send them
    with ses_faults(ses, lambda to: throttled), pytest.raises(DeliveryIncomplete) as raised:
        run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then each throttle halves the pace (logged to the thousandth of an email a second)
    # until the floor, 95 % of the fallback rate of one a second
    records = logged(stdout_json, "SES throttled the run, pacing slower")
    assert [(r["level"], r["check"], r["rate"]) for r in records] == [
        ("WARNING", "note_reminders", 4.75),
        ("WARNING", "note_reminders", 2.375),
        ("WARNING", "note_reminders", 1.188),
        ("WARNING", "note_reminders", 0.95),
    ]
    assert (raised.value.summary.throttled, raised.value.summary.retrying) == (4, 4)


def test_an_email_given_back_by_a_notice_in_flight_goes_to_the_next_notice(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one email left of the 24-hour quota, two workers, and note-0's reminders to Sam
    # and Brooke, Sam's taken by another run just as this one claims it
    monkeypatch.setenv("SEND_CONCURRENCY", "2")
    SES_ACCOUNT.sent_last_24_hours = SES_ACCOUNT.max_24_hour_send - 1
    [sam, _] = notes(1)
    models.bind(Settings.from_env())  # the client of a run with two workers (its own pool)
    client = Notification._get_connection().connection.client
    taken: list[str] = []

    def another_run_first(params: dict[str, Any], **_: object) -> None:
        if json.loads(params["body"])["Key"]["id"] == {"S": sam} and not taken:
            taken.append(sam)
            with another_actor():
                f.claimed_entry(
                    sam,
                    recipient_id="staff-2",
                    email=SAM,
                    run_id="another-run",
                    lease_expires_at=MONDAY.astimezone(UTC) + timedelta(minutes=5),
                    kind="note_reminders",
                    item_id="note-0",
                )

    # When the run sends (Sam's notice holds the last email while its claim is refused)
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", another_run_first)
    try:
        summary = run("note_reminders", MONDAY, ses, clock=FakeClock())
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", another_run_first)

    # Then Sam's notice gives the email back and Brooke's reminder takes it
    assert taken == [sam]
    assert (summary.sent, summary.skipped, summary.quota_deferred) == (1, 1, 0)
    assert [m.recipients for m in sent_emails()] == [[BROOKE]]


def test_a_dry_run_asks_ses_for_nothing(service: Settings, ses: SESV2Client) -> None:
    # Given a note due to Sam and Brooke
    notes(1)

    # When a dry run looks at it
    summary = run("note_reminders", MONDAY, ses, dry_run=True)

    # Then it lists both reminders without reading the quota or sending
    assert len(summary.would_send) == 2
    assert SES_ACCOUNT.calls == 0
    assert (summary.send_rate, summary.quota_remaining) == (0.0, None)
    assert sent_emails() == []


def test_a_runs_emails_are_sent_from_its_delivery_worker_threads(
    service: Settings, ses: SESV2Client
) -> None:
    # Given two notes due (four reminders)
    notes(2)
    senders: list[str] = []

    def sender(**_: object) -> None:
        senders.append(threading.current_thread().name)

    # When the run sends them
    ses.meta.events.register("before-call.sesv2.SendEmail", sender)
    try:
        summary = run("note_reminders", MONDAY, ses, clock=FakeClock())
    finally:
        ses.meta.events.unregister("before-call.sesv2.SendEmail", sender)

    # Then every email left from one of the run's named workers, not the caller's thread
    assert summary.sent == 4
    assert len(senders) == 4
    assert all(name.startswith(f"{WORKER_THREADS}_") for name in senders), senders


def test_a_dry_run_lists_the_notices_in_the_order_the_check_made_them(
    service: Settings, ses: SESV2Client
) -> None:
    # Given 20 notes due, each to its author Sam and then the BDM Brooke
    keys = notes(20)

    # When a dry run looks at them
    summary = run("note_reminders", MONDAY, ses, dry_run=True)

    # Then it lists all 40 reminders in the check's order, note by note (in the order the
    # index returns them) and each note's author before its BDM: one worker, not raced
    listed = [key for would in summary.would_send for key in would["keys"]]
    assert sorted(listed) == sorted(keys)
    for author, bdm in zip(listed[::2], listed[1::2], strict=True):
        assert author.endswith("#staff-2")
        assert bdm == author.removesuffix("staff-2") + "bdm-1"
