"""Integration: the ``record_ses_events`` function invoked through ``chalice.test.Client``.

The dev stage (``.chalice/config.json``) sends through its configuration set
``loan-reminders-dev``; EventBridge delivers that set's SES events to the function.
The events are the recorded ones of ``tests/fixtures/ses_events``, rebuilt with the
test client's event helper for the message the check really sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chalice.app import CloudWatchEventConfig
from chalice.test import Client
from freezegun import freeze_time

import app
from chalicelib import ledger, ses_events, suppression
from chalicelib.models import Notification
from tests import factories
from tests.aws_recorder import AwsCall
from tests.conftest import DEV_ENV
from tests.support import (
    REGION,
    SuppressionList,
    ledger_key,
    scheduled_event,
    sent_emails,
    ses_client,
    ses_event,
    utc,
)

pytestmark = [pytest.mark.task, pytest.mark.integration]

SAM = "sam.author@lender.example.com.au"
SAM_KEY = ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")
CONFIGURATION_SET = DEV_ENV["SES_CONFIGURATION_SET"]


def send_note_reminders(client: Client) -> None:
    """Note-1 is due on 23 Nov: the dev stage's scheduled run at 10:00 Sydney sends it."""
    factories.crm()
    factories.application()
    factories.note(remind_date="2026-11-23")
    at = utc("2026-11-22 23:00")
    with freeze_time(at):
        client.lambda_.invoke(
            "check_note_reminders", scheduled_event(client, "check_note_reminders", at)
        )


def sam_message() -> tuple[str, str]:
    """(message id, send token) of the reminder SES accepted for Sam."""
    [message] = [m for m in sent_emails() if m.recipients == [SAM]]
    token = Notification.get(SAM_KEY, consistent_read=True).send_token
    assert token
    return message.message_id, token


def invoke(client: Client, name: str, *, token: str, message_id: str, **replace: Any) -> Any:
    """Deliver the recorded event ``name`` about the message to the function, as EventBridge."""
    recorded = ses_event(name, token=token, message_id=message_id, address=SAM, **replace)
    event = client.events.generate_cw_event(
        source=recorded["source"],
        detail_type=recorded["detail-type"],
        detail=recorded["detail"],
        resources=recorded["resources"],
        region=REGION,
    )
    with freeze_time("2026-11-22 23:05:00"):
        return client.lambda_.invoke("record_ses_events", event).payload


def test_the_function_listens_for_the_six_ses_event_types_on_the_default_bus() -> None:
    [source] = [s for s in app.app.event_sources if s.name == "record_ses_events"]
    assert isinstance(source, CloudWatchEventConfig)

    assert source.event_pattern == {
        "source": ["aws.ses"],
        "detail-type": [
            "Email Sent",
            "Email Delivered",
            "Email Bounced",
            "Email Complaint Received",
            "Email Rejected",
            "Email Delivery Delayed",
        ],
    }


def test_the_dev_stage_sends_through_its_configuration_set_and_tags_each_message(
    client: Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # When the dev stage's note reminder check sends
    send_note_reminders(client)

    # Then every message went through the stage's configuration set, tagged with its entry's token
    sends = [c.params for c in aws_calls() if c.operation == "SendEmail"]
    assert len(sends) == 2
    assert {s["ConfigurationSetName"] for s in sends} == {CONFIGURATION_SET}
    _, token = sam_message()
    assert [{"Name": "send_token", "Value": token}] in [s["EmailTags"] for s in sends]


def test_the_delivery_of_a_sent_reminder_is_recorded_on_its_entry(client: Client) -> None:
    # Given Sam's reminder went out
    send_note_reminders(client)
    message_id, token = sam_message()

    # When SES reports its Send and its Delivery
    sent = invoke(client, "send", token=token, message_id=message_id)
    delivered = invoke(client, "delivery", token=token, message_id=message_id)

    # Then both are on Sam's entry, which stays sent with the run's record
    assert (sent["recorded"], delivered["recorded"]) == ([SAM_KEY], [SAM_KEY])
    entry = Notification.get(SAM_KEY, consistent_read=True)
    assert (entry.status, entry.message_id) == (ledger.SENT, message_id)
    assert entry.ses_events == {"Send", "Delivery"}
    assert entry.delivered_at is not None


def test_a_hard_bounce_suppresses_the_address_for_the_next_runs(
    client: Client, suppression_list: SuppressionList
) -> None:
    send_note_reminders(client)
    message_id, token = sam_message()

    payload = invoke(client, "bounce_permanent", token=token, message_id=message_id)

    assert payload["suppressed"] == [SAM]
    assert suppression.suppressed([SAM]) == {SAM: suppression.BOUNCE}
    found = ses_client().get_suppressed_destination(EmailAddress=SAM)["SuppressedDestination"]
    assert found["Reason"] == "BOUNCE"
    assert Notification.get(SAM_KEY).bounce_type == "Permanent/General"


def test_the_events_of_another_stages_configuration_set_are_ignored(client: Client) -> None:
    send_note_reminders(client)
    message_id, token = sam_message()

    payload = invoke(
        client,
        "bounce_permanent",
        token=token,
        message_id=message_id,
        configuration_set="loan-reminders-prod",
    )

    assert payload["ignored"] == "configuration set 'loan-reminders-prod' is not this stage's"
    assert Notification.get(SAM_KEY).ses_events is None
    assert suppression.suppressed([SAM]) == {}


def test_an_event_the_function_cannot_use_is_reported_not_raised(client: Client) -> None:
    event = client.events.generate_cw_event(
        source="aws.ses",
        detail_type="Email Sent",
        detail={"eventType": "Send"},
        resources=[],
        region=REGION,
    )

    payload = client.lambda_.invoke("record_ses_events", event).payload

    assert payload == {"ignored": "mail.messageId is missing"}
    assert ses_events.DETAIL_TYPES["Email Sent"] == "Send"
