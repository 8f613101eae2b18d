"""SES's own events settle the ledger: interrupted and ambiguous sends, bounces, complaints.

The events are recorded EventBridge SES events (``tests/fixtures/ses_events``) with the
send token of a real ledger entry. moto's SES publishes no events and has no
suppression list: the events are applied with :func:`chalicelib.ses_events.record_event`
and the suppression list is answered at botocore's boundary (``suppression_list``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger, ses_events, suppression
from chalicelib.config import Settings
from chalicelib.models import Notification, Repayment
from chalicelib.ses_events import Outcome, record_event
from tests import factories as f
from tests.factories import BEN, BROOKE, SAM
from tests.support import (
    FIXTURE_CONFIGURATION_SET,
    REGION,
    SuppressionList,
    ledger_key,
    run,
    sent_emails,
    ses_client,
    ses_event,
    sydney,
    utc,
)

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

MONDAY = sydney("2026-11-23 12:00")
NOW = utc("2026-11-22 20:30")
TOKEN = "9b0e1c2d3f4a5b6c7d8e9f0a1b2c3d4e"
KEY = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")
NOTE1_SAM = ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")
NOTE1_BROOKE = ledger_key("note_reminders", "note-1", "2026-11-23", "bdm-1")


@pytest.fixture
def stage(service: Settings) -> Settings:
    """The test stage with the configuration set the recorded events name."""
    return Settings(
        tables=service.tables,
        sender_email=service.sender_email,
        timezone=service.timezone,
        region=service.region,
        lender=service.lender,
        ses_configuration_set=FIXTURE_CONFIGURATION_SET,
    )


Apply = Callable[..., Outcome]


@pytest.fixture
def apply(stage: Settings, suppression_list: SuppressionList) -> Apply:
    """Apply a recorded event (by fixture name) to the ledger, as the handler does."""
    client = ses_client()

    def apply_event(name: str, token: str | None = TOKEN, **replace: Any) -> Outcome:
        event = ses_events.parse(ses_event(name, token=token, **replace))
        return record_event(event, settings=stage, now=NOW, client=client, emit_metrics=False)

    return apply_event


def entry_in(
    status: str,
    *,
    key: str = KEY,
    token: str = TOKEN,
    kind: str = "repayment_upcoming",
    **extra: Any,
) -> None:
    """A ledger entry for Ben's upcoming reminder, claimed 30 minutes ago with ``token``."""
    claimed = utc("2026-11-22 20:00")
    Notification(
        id=key,
        kind=kind,
        item_id="rep-1",
        recipient_id="bor-1",
        recipient_email=BEN,
        business_date="2026-11-23",
        status=status,
        run_id="run-1",
        attempts=1,
        created_at=claimed,
        updated_at=claimed,
        claimed_at=claimed,
        lease_expires_at=claimed + ledger.CLAIM_LEASE,
        send_token=token,
        **extra,
    ).save()


def entry(key: str = KEY) -> Notification:
    return Notification.get(key, consistent_read=True)


def state(key: str = KEY) -> dict[str, Any]:
    """The entry as stored, without its last-write time."""
    item = entry(key).attribute_values
    item.pop("updated_at", None)
    return item


def failed_keys() -> list[str]:
    return [e.id for e in ledger.failed_entries()]


# --- settling ambiguous and interrupted sends -------------------------------------------


def test_an_unknown_entry_becomes_sent_when_ses_reports_its_send(apply: Apply) -> None:
    # Given a send whose outcome the run could not tell (a lost response)
    entry_in(ledger.UNKNOWN)

    # When SES reports the message as sent
    outcome = apply("send", message_id="ses-message-1")

    # Then the entry is sent, with SES's message id and time
    assert outcome.settled == [KEY]
    settled = entry()
    assert settled.status == ledger.SENT
    assert settled.message_id == "ses-message-1"
    assert settled.sent_at == datetime(2026, 11, 22, 20, 0, 4, 512000, tzinfo=UTC)
    assert settled.ses_events == {"Send"}
    assert settled.updated_at == NOW


def test_a_claim_whose_run_died_becomes_sent_when_ses_reports_its_send(apply: Apply) -> None:
    entry_in(ledger.CLAIMED)

    apply("send")

    assert entry().status == ledger.SENT


def test_an_entry_failed_as_interrupted_becomes_sent_and_leaves_the_failed_list(
    apply: Apply,
) -> None:
    # Given an interrupted claim that a later run recorded as failed for an operator
    failed_at = utc("2026-11-22 20:20")
    entry_in(
        ledger.FAILED,
        failure_reason=ledger.INTERRUPTED,
        failed_status=ledger.FAILED,
        failed_at=failed_at,
        last_error=f"{ledger.INTERRUPTED} (run run-1)",
    )
    assert failed_keys() == [KEY]

    # When SES's Send event for its message arrives
    apply("send")

    # Then it is sent and no longer operator work
    settled = entry()
    assert settled.status == ledger.SENT
    # PynamoDB types a null=True attribute as str; an absent one reads as None.
    assert (settled.failure_reason, settled.failed_status, settled.failed_at) == (None, None, None)  # type: ignore[comparison-overlap]
    assert failed_keys() == []


def test_a_run_killed_after_ses_accepted_is_settled_by_the_send_event_not_failed(
    service: Settings,
    ses: SESV2Client,
    stage: Settings,
    suppression_list: SuppressionList,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a run killed right after SES accepted Sam's reminder (the entry stays claimed);
    # one send at a time, as a real kill stops every thread and this one stops only its own
    monkeypatch.setenv("SEND_CONCURRENCY", "1")
    f.crm()
    f.application()
    f.note()

    def kill_after_first(parsed: dict[str, object] | None = None, **_: object) -> None:
        if "MessageId" in (parsed or {}) and len(sent_emails()) == 1:
            raise KeyboardInterrupt

    ses.meta.events.register("after-call.sesv2.SendEmail", kill_after_first)
    try:
        with pytest.raises(KeyboardInterrupt):
            run("note_reminders", MONDAY, ses)
    finally:
        ses.meta.events.unregister("after-call.sesv2.SendEmail", kill_after_first)
    [accepted] = sent_emails()
    killed = NOTE1_SAM if accepted.recipients == [SAM] else NOTE1_BROOKE
    claimed = entry(killed)
    assert claimed.status == ledger.CLAIMED

    # When SES's Send event for that message arrives, then the next hour's run goes through
    event = ses_events.parse(
        ses_event("send", token=claimed.send_token, message_id=accepted.message_id)
    )
    record_event(event, settings=stage, now=MONDAY.astimezone(UTC), emit_metrics=False)
    later = run("note_reminders", sydney("2026-11-23 13:00"), ses)

    # Then the killed notice is sent (not failed), and nobody got a second email
    settled = entry(killed)
    assert (settled.status, settled.message_id) == (ledger.SENT, accepted.message_id)
    assert (later.failed, later.sent) == (0, 1)
    assert sorted(r for m in sent_emails() for r in m.recipients) == sorted([SAM, BROOKE])
    assert failed_keys() == []


# --- duplicates, order, stale tokens ------------------------------------------------------


def test_a_duplicate_send_event_changes_nothing(apply: Apply) -> None:
    entry_in(ledger.UNKNOWN)
    apply("send")
    before = entry().attribute_values

    again = apply("send")

    assert (again.settled, again.recorded) == ([], [])
    assert entry().attribute_values == before


def test_a_delivery_before_the_send_settles_the_entry_and_the_late_send_only_adds_itself(
    apply: Apply,
) -> None:
    # Given an ambiguous send
    entry_in(ledger.UNKNOWN)

    # When the Delivery event arrives first, and the Send event after it
    delivered = apply("delivery")
    sent = apply("send")

    # Then the Delivery already settled it; the Send only records itself
    assert (delivered.settled, sent.recorded) == ([KEY], [KEY])
    settled = entry()
    assert settled.status == ledger.SENT
    assert settled.delivered_at == datetime(2026, 11, 22, 20, 0, 6, 871000, tzinfo=UTC)
    assert settled.ses_events == {"Send", "Delivery"}


def test_a_hard_bounce_before_the_send_settles_records_and_suppresses(
    apply: Apply, suppression_list: SuppressionList
) -> None:
    entry_in(ledger.UNKNOWN)

    apply("bounce_permanent")
    apply("send")

    bounced = entry()
    assert bounced.status == ledger.SENT
    assert bounced.bounce_type == "Permanent/General"
    assert bounced.bounced_at == datetime(2026, 11, 22, 20, 0, 8, 204000, tzinfo=UTC)
    assert bounced.ses_events == {"Send", "Bounce"}
    assert suppression.suppressed([BEN]) == {BEN: suppression.BOUNCE}


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations(["send", "delivery_delay", "delivery"])),
    ids=lambda order: "-".join(order),
)
def test_events_in_any_order_and_repeated_end_in_the_same_ledger(
    apply: Apply, order: tuple[str, ...]
) -> None:
    # Given an ambiguous send, and the ledger after its events arrived in SES's order
    entry_in(ledger.UNKNOWN, key="expected#1")
    for name in ("send", "delivery_delay", "delivery"):
        apply(name)
    expected = state("expected#1")
    Notification(id="expected#1").delete()

    # When the same events arrive in another order, each of them twice
    entry_in(ledger.UNKNOWN)
    for name in order + order:
        apply(name)

    # Then the entry ends the same
    assert {**state(), "id": "expected#1"} == expected
    assert expected["status"] == ledger.SENT
    assert expected["ses_events"] == {"Send", "DeliveryDelay", "Delivery"}


def test_an_event_whose_token_the_entry_no_longer_carries_changes_nothing(apply: Apply) -> None:
    # Given the entry was claimed again since that message (a newer attempt, a new token)
    entry_in(ledger.CLAIMED, token="newer-attempt")
    before = entry().attribute_values

    # When the older message's events arrive
    outcomes = [apply(name) for name in ("send", "delivery", "bounce_permanent", "reject")]

    # Then nothing changes
    assert entry().attribute_values == before
    assert all(o.entries == [] and o.ignored for o in outcomes)


def test_an_event_for_an_unknown_token_is_ignored_and_logged(
    apply: Apply, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    stdout_json()

    outcome = apply("delivery", token="never-issued")

    assert outcome.entries == []
    assert outcome.ignored is not None
    assert "no ledger entry" in outcome.ignored
    [logged] = [r for r in stdout_json() if r.get("message") == "SES event ignored"]
    assert logged["ses_event"]["message_id"] == outcome.message_id


def test_an_event_of_another_stages_configuration_set_is_ignored(apply: Apply) -> None:
    entry_in(ledger.UNKNOWN)

    outcome = apply("send", configuration_set="loan-reminders-prod")

    assert outcome.ignored is not None
    assert "loan-reminders-prod" in outcome.ignored
    assert entry().status == ledger.UNKNOWN


def test_an_event_of_a_message_without_a_send_token_is_ignored(apply: Apply) -> None:
    entry_in(ledger.UNKNOWN)

    outcome = apply("send", token=None)

    assert outcome.ignored == "message has no send_token tag"
    assert entry().status == ledger.UNKNOWN


def test_an_unusable_event_is_ignored_with_its_reason(
    stage: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SES_CONFIGURATION_SET", FIXTURE_CONFIGURATION_SET)
    broken = ses_event("send")
    del broken["detail"]["mail"]["messageId"]
    other = {**ses_event("send"), "source": "aws.events"}

    assert ses_events.handle(broken) == {"ignored": "mail.messageId is missing"}
    assert ses_events.handle(other) == {"ignored": "source 'aws.events' is not aws.ses"}


# --- what each event records -------------------------------------------------------------


def test_a_delivery_of_a_sent_notice_is_recorded_without_changing_what_the_run_recorded(
    apply: Apply,
) -> None:
    entry_in(
        ledger.SENT,
        message_id="run-message-id",
        sent_at=utc("2026-11-22 20:00"),
        subject="Upcoming Repayment Reminder",
    )

    outcome = apply("delivery")

    delivered = entry()
    assert outcome.recorded == [KEY]
    assert (delivered.status, delivered.message_id) == (ledger.SENT, "run-message-id")
    assert delivered.sent_at == utc("2026-11-22 20:00")
    assert delivered.delivered_at == datetime(2026, 11, 22, 20, 0, 6, 871000, tzinfo=UTC)


def test_a_delivery_delay_is_recorded(apply: Apply) -> None:
    entry_in(ledger.SENT, message_id="m")

    apply("delivery_delay")

    assert entry().delayed_at == datetime(2026, 11, 22, 20, 15, 30, 112000, tzinfo=UTC)


def test_a_hard_bounce_suppresses_the_address_in_ses_and_in_the_ledger(
    apply: Apply, suppression_list: SuppressionList
) -> None:
    # Given Ben's reminder was sent
    entry_in(ledger.SENT, message_id="m")

    # When his mail server rejects it permanently
    outcome = apply("bounce_permanent")

    # Then the bounce is on the entry, and his address is suppressed in SES and the ledger
    assert outcome.suppressed == [BEN]
    assert entry().bounce_type == "Permanent/General"
    found = ses_client().get_suppressed_destination(EmailAddress=BEN)["SuppressedDestination"]
    assert found["Reason"] == "BOUNCE"
    record = entry(suppression.key(BEN))
    assert (record.kind, record.status) == (suppression.KIND, suppression.STATUS)
    assert record.suppression_reason == suppression.BOUNCE
    assert record.suppressed_by == KEY
    assert record.recipient_email == BEN
    assert record.suppressed_at == datetime(2026, 11, 22, 20, 0, 8, 204000, tzinfo=UTC)


def test_a_complaint_suppresses_the_address(
    apply: Apply, suppression_list: SuppressionList
) -> None:
    entry_in(ledger.SENT, message_id="m")

    apply("complaint")

    assert entry().complained_at == datetime(2026, 11, 23, 1, 14, 39, tzinfo=UTC)
    assert suppression_list.puts == [(BEN, "COMPLAINT")]
    assert suppression.suppressed([BEN]) == {BEN: suppression.COMPLAINT}


def test_a_transient_bounce_is_recorded_but_does_not_suppress(
    apply: Apply, suppression_list: SuppressionList
) -> None:
    entry_in(ledger.SENT, message_id="m")

    outcome = apply("bounce_transient")

    assert entry().bounce_type == "Transient/MailboxFull"
    assert outcome.suppressed == []
    assert suppression_list.puts == []
    assert suppression.suppressed([BEN]) == {}
    with pytest.raises(ClientError, match="NotFoundException"):
        ses_client().get_suppressed_destination(EmailAddress=BEN)


def test_a_second_bounce_keeps_the_first_suppression_record(
    apply: Apply, suppression_list: SuppressionList
) -> None:
    entry_in(ledger.SENT, message_id="m")
    apply("bounce_permanent")
    first = entry(suppression.key(BEN)).attribute_values

    entry_in(
        ledger.SENT,
        key=ledger_key("note_reminders", "n", "2026-11-23", "bor-1"),
        token="other",
        message_id="m2",
    )
    apply("complaint", token="other")

    assert entry(suppression.key(BEN)).attribute_values == first
    assert suppression_list.puts == [(BEN, "BOUNCE"), (BEN, "COMPLAINT")]


def test_a_reject_fails_the_entry_with_the_reason_even_after_its_send(apply: Apply) -> None:
    # Given SES reported the message as sent
    entry_in(ledger.UNKNOWN)
    apply("send")

    # When SES then rejects it (a virus), and the Send event is repeated
    apply("reject")
    apply("send")

    # Then it is failed with SES's reason, for an operator (retry-failed)
    rejected = entry()
    assert rejected.status == ledger.FAILED
    assert rejected.failure_reason == "rejected by SES: Bad content"
    assert rejected.rejected_reason == "Bad content"
    assert failed_keys() == [KEY]


def test_a_reject_before_the_send_leaves_the_entry_failed(apply: Apply) -> None:
    entry_in(ledger.UNKNOWN)

    apply("reject")
    apply("send")

    assert entry().status == ledger.FAILED
    assert entry().ses_events == {"Reject", "Send"}


def test_every_entry_of_a_digest_records_the_event_of_its_one_email(
    service: Settings, ses: SESV2Client, stage: Settings
) -> None:
    # Given one stale digest to Brooke covering two applications
    f.crm()
    f.application("app-1", stage_last_updated="2026-11-02T10:00:00+11:00")
    f.application(
        "app-2", reference_number="APP-1002", stage_last_updated="2026-11-01T10:00:00+11:00"
    )
    run("stale_applications", MONDAY, ses)
    [digest] = sent_emails()
    keys = [e.id for e in Notification.by_recipient.query(BROOKE)]
    [token] = {entry(k).send_token for k in keys}

    # When SES reports its delivery
    event = ses_events.parse(ses_event("delivery", token=token, message_id=digest.message_id))
    outcome = record_event(event, settings=stage, now=NOW, emit_metrics=False)

    # Then both entries record it
    assert sorted(outcome.recorded) == sorted(keys)
    assert len(keys) == 2
    assert all(entry(k).delivered_at is not None for k in keys)


# --- suppressed() -------------------------------------------------------------------------


def test_suppressed_finds_addresses_case_insensitively_and_not_a_changed_address(
    service: Settings,
) -> None:
    # Given Ben's old address hard-bounced
    at = utc("2026-11-22 20:00")
    suppression.record("Ben.Lee@Example.net", suppression.BOUNCE, at=at, now=at)

    # When a run asks about his address as the CRM spells it, and about his new one
    found = suppression.suppressed([" ben.lee@EXAMPLE.net ", "ben.lee@new.example.net"])

    # Then the old one is suppressed and the new one is mailed
    assert found == {" ben.lee@EXAMPLE.net ": suppression.BOUNCE}


def test_suppressed_reads_many_addresses_in_batches_and_skips_unusable_ones(
    service: Settings,
) -> None:
    at = utc("2026-11-22 20:00")
    addresses = [f"borrower{n}@example.net" for n in range(150)]
    for address in addresses[::50]:
        suppression.record(address, suppression.COMPLAINT, at=at, now=at)

    found = suppression.suppressed([*addresses, "", "x" * 3000 + "@example.net"])

    assert found == {a: suppression.COMPLAINT for a in addresses[::50]}
    assert suppression.suppressed([]) == {}
    assert not suppression.record("x" * 3000 + "@example.net", "BOUNCE", at=at, now=at)


def test_suppressed_ignores_ledger_entries_that_are_not_suppressions(service: Settings) -> None:
    entry_in(ledger.SENT, key=suppression.key(BEN))

    assert suppression.suppressed([BEN]) == {}


# --- metrics ------------------------------------------------------------------------------


def test_bounces_complaints_and_deliveries_are_counted_for_the_notices_check(
    stage: Settings,
    suppression_list: SuppressionList,
    stdout_json: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an ambiguous repayment reminder and a sent note reminder
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "loan-reminders-dev")
    entry_in(ledger.UNKNOWN)
    entry_in(ledger.SENT, key=NOTE1_SAM, token="note-token", kind="note_reminders")
    stdout_json()

    # When the repayment reminder is delivered then bounces, and the note reminder is complained of
    for name, token in (
        ("delivery", TOKEN),
        ("bounce_permanent", TOKEN),
        ("complaint", "note-token"),
    ):
        event = ses_events.parse(ses_event(name, token=token))
        record_event(event, settings=stage, now=NOW, client=ses_client())

    # Then each is one EMF document with the check of its notice and the stage's service
    documents = [d for d in stdout_json() if "_aws" in d]
    counted = [
        (d["check"], d["service"], name, d[name][0] if isinstance(d[name], list) else d[name])
        for d in documents
        for directive in d["_aws"]["CloudWatchMetrics"]
        for name in (m["Name"] for m in directive["Metrics"])
    ]
    assert counted == [
        ("repayment_reminders", "loan-reminders-dev", "NoticesSettled", 1),
        ("repayment_reminders", "loan-reminders-dev", "NoticesDelivered", 1),
        ("repayment_reminders", "loan-reminders-dev", "NoticesBounced", 1),
        ("note_reminders", "loan-reminders-dev", "NoticesComplained", 1),
    ]
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "LoanReminders" for d in documents)


def test_the_check_of_every_notice_kind_is_a_check() -> None:
    from chalicelib.registry import CHECKS, KINDS

    assert {ses_events.check_of(kind) for kind in KINDS} == set(CHECKS)


def test_the_recorded_events_are_what_the_handler_parses() -> None:
    parsed = {
        name: ses_events.parse(ses_event(name))
        for name in (
            "send",
            "delivery",
            "bounce_permanent",
            "bounce_transient",
            "complaint",
            "reject",
            "delivery_delay",
        )
    }

    assert {name: p.type for name, p in parsed.items()} == {
        "send": "Send",
        "delivery": "Delivery",
        "bounce_permanent": "Bounce",
        "bounce_transient": "Bounce",
        "complaint": "Complaint",
        "reject": "Reject",
        "delivery_delay": "DeliveryDelay",
    }
    assert {p.configuration_set for p in parsed.values()} == {FIXTURE_CONFIGURATION_SET}
    assert parsed["bounce_permanent"].suppression_reason == "BOUNCE"
    assert parsed["complaint"].suppression_reason == "COMPLAINT"
    assert parsed["bounce_transient"].suppression_reason is None
    assert parsed["complaint"].recipients == (BEN,)
    assert REGION in ses_event("send")["region"]


# --- suppressed addresses in a run ----------------------------------------------------------


def test_a_suppressed_address_is_not_mailed_until_the_crm_changes_it(
    service: Settings, ses: SESV2Client, suppression_list: SuppressionList
) -> None:
    # Given Ben's address hard-bounced, and rep-1 is due to Ben and Mia
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment()
    at = utc("2026-11-20 01:00")
    suppression.record(BEN, suppression.BOUNCE, at=at, now=at)

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then only Mia is mailed; Ben's notice is held, unclaimed, and the flag stays unset
    assert [m.recipients for m in sent_emails()] == [["mia.chen@example.net"]]
    assert (summary.sent, summary.suppressed) == (1, 1)
    assert [e.recipient_id for e in Notification.by_item.query("rep-1")] == ["bor-2"]
    assert not Repayment.get("rep-1").reminder_sent

    # When the CRM changes Ben's address and the next hour's check runs
    f.borrower(email="ben.lee@new.example.net")
    later = run("repayment_reminders", sydney("2026-11-23 13:00"), ses)

    # Then Ben is mailed at his new address, once, and the flag is set
    assert [m.recipients for m in sent_emails()][1:] == [["ben.lee@new.example.net"]]
    assert (later.sent, later.suppressed) == (1, 0)
    assert Repayment.get("rep-1").reminder_sent
