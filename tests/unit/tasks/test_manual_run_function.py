"""The ``run_check`` Lambda function (``chalice invoke -n run_check``) through the test client.

As in ``test_scheduled_functions_end_to_end.py``, the client applies the dev stage's environment
from ``.chalice/config.json`` during the invocation, so the dev tables are
provisioned and the dev sender verified, and the wall clock is frozen.
"""

from __future__ import annotations

from typing import Any

import pytest
from chalice.test import Client
from freezegun import freeze_time

from chalicelib.models import Notification, Repayment
from chalicelib.runner import InvalidRequest
from tests import factories
from tests.conftest import DEV_ENV
from tests.support import ledger_key, sent_emails, subjects_by_recipient

pytestmark = [pytest.mark.task, pytest.mark.integration]

BROOKE = "brooke.davis@lender.example.com.au"
SAM = "sam.author@lender.example.com.au"
NOON = "2026-11-23T01:00:00Z"  # 12:00 on 23 Nov 2026 in Sydney


def invoke(client: Client, payload: object, clock: str = NOON) -> Any:
    """Invoke ``run_check`` with ``payload`` and the wall clock frozen at ``clock``."""
    with freeze_time(clock):
        return client.lambda_.invoke("run_check", payload).payload


def note_and_repayment_due() -> None:
    factories.crm()
    factories.application()
    factories.note(remind_date="2026-11-23")
    factories.repayment(due_date="2026-11-30")


def test_run_check_runs_a_check_for_a_date(client: Client) -> None:
    note_and_repayment_due()

    # When the operator runs the note reminders for 23 Nov the next morning
    payload = invoke(
        client, {"check": "note_reminders", "date": "2026-11-23"}, clock="2026-11-23T21:00:00Z"
    )

    # Then they go out as of 23 Nov
    assert (payload["check"], payload["business_date"], payload["acted"]) == (
        "note_reminders",
        "2026-11-23",
        True,
    )
    assert (payload["sent"], payload["dry_run"], payload["would_send"]) == (2, False, [])
    assert subjects_by_recipient() == {
        SAM: ["Note Reminder: Call the valuer"],
        BROOKE: ["Note Reminder: Call the valuer"],
    }
    assert all(sent.source == DEV_ENV["SENDER_EMAIL"] for sent in sent_emails())


def test_a_dry_run_returns_what_would_be_sent_and_changes_nothing(client: Client) -> None:
    note_and_repayment_due()

    payload = invoke(
        client, {"check": "repayment_reminders", "date": "2026-11-23", "dry_run": True}
    )

    assert payload["dry_run"] is True
    assert payload["sent"] == 0
    assert payload["would_send"] == [
        {
            "kind": "repayment_upcoming",
            "recipient_id": "bor-1",
            "recipient_name": "Ben Lee",
            "recipient_email": "ben.lee@example.net",
            "subject": "Upcoming Repayment Reminder: APP-1001 due 30/11/2026",
            "item_ids": ["rep-1"],
            "keys": [ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")],
        }
    ]
    assert sent_emails() == []
    assert Notification.count() == 0
    assert Repayment.get("rep-1").reminder_sent is None


def test_without_a_date_the_window_applies_unless_ignored(client: Client) -> None:
    note_and_repayment_due()
    early = "2026-11-22T19:00:00Z"  # 06:00 in Sydney

    gated = invoke(client, {"check": "note_reminders"}, clock=early)
    forced = invoke(client, {"check": "note_reminders", "ignore_window": True}, clock=early)

    assert (gated["acted"], gated["sent"]) == (False, 0)
    assert (forced["acted"], forced["business_date"], forced["sent"]) == (True, "2026-11-23", 2)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"check": "birthdays"}, "unknown check 'birthdays'; expected one of stale_applications"),
        ({}, "unknown check None"),
        ({"check": "note_reminders", "date": "23/11/2026"}, "date '23/11/2026' is not a YYYY"),
        ({"check": "note_reminders", "date": "2026-02-30"}, "date '2026-02-30' is not a YYYY"),
        ({"check": "note_reminders", "date": 20261123}, "date 20261123 is not a YYYY-MM-DD"),
        ({"check": "note_reminders", "dry_run": "yes"}, "dry_run must be true or false"),
        ({"check": "note_reminders", "dryrun": True}, "unknown field(s) 'dryrun'; expected check"),
        ("note_reminders", "the payload must be a JSON object"),
        (
            {"check": "note_reminders", "date": "2026-11-24"},
            "date 2026-11-24 is in the future (today is 2026-11-23 in Australia/Sydney)",
        ),
    ],
)
def test_a_bad_payload_fails_with_a_clear_error(
    client: Client, payload: object, message: str
) -> None:
    note_and_repayment_due()

    with pytest.raises(InvalidRequest) as raised:
        invoke(client, payload)

    assert message in str(raised.value)
    assert sent_emails() == []
