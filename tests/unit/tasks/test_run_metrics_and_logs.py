"""Metrics and logs: one EMF document per run, JSON log lines with the event id, masked addresses.

Powertools prints EMF documents (``print``) and log lines (its handler) to stdout;
the handler keeps the ``sys.stdout`` of import time, so the ``output`` fixture
points it at the stdout of the moment, which ``capsys`` captures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from chalice.test import Client
from freezegun import freeze_time
from mypy_boto3_sesv2 import SESV2Client

from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.observability import mask_addresses
from tests import factories
from tests.support import Fault, run, scheduled_event, ses_error, ses_faults, sydney, utc

pytestmark = [pytest.mark.task, pytest.mark.execution]

EVENT_ID = "5d3b1f0e-7c1a-4c2e-9a57-0c9f3f1e2a10"

Output = Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
MONDAY = sydney("2026-11-23 12:00")
BEN = "ben.lee@example.net"
MIA = "mia.chen@example.net"
COUNTS = (
    "ItemsRead",
    "NoticesSent",
    "NoticesFailed",
    "NoticesRetrying",
    "NoticesUnknown",
    "NoticesDeferred",
    "NoticesSuppressed",
    "ItemsInvalid",
)


@pytest.fixture
def output(stdout_json: Callable[[], list[dict[str, Any]]]) -> Output:
    """Read what a run printed: ``(EMF documents, log records)``."""

    def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        lines = stdout_json()
        return [x for x in lines if "_aws" in x], [x for x in lines if "_aws" not in x]

    return read


def metric(document: dict[str, Any], name: str) -> float:
    """One metric's value in an EMF document (Powertools writes each as a one-item list)."""
    (value,) = document[name]
    return float(value)


def values(document: dict[str, Any]) -> dict[str, float]:
    """The counts of an EMF document, by metric name."""
    return {name: metric(document, name) for name in COUNTS}


def test_a_run_prints_one_emf_document_with_the_check_dimension(
    service: Settings, output: Output
) -> None:
    # Given a note due today to two people, and a note with a malformed application id
    factories.crm()
    factories.application()
    factories.note(remind_date="2026-11-23")
    factories.note("note-bad", remind_date="2026-11-23", application_id="app-missing")

    run("note_reminders", MONDAY)

    # Then one EMF document describes the run
    documents, _ = output()
    assert len(documents) == 1
    emf = documents[0]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "LoanReminders"
    assert directive["Dimensions"] == [["check", "service"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "ItemsRead": "Count",
        "NoticesSent": "Count",
        "NoticesFailed": "Count",
        "NoticesRetrying": "Count",
        "NoticesUnknown": "Count",
        "NoticesDeferred": "Count",
        "NoticesSuppressed": "Count",
        "ItemsInvalid": "Count",
        "RunDuration": "Milliseconds",
    }
    assert (emf["check"], emf["service"]) == ("note_reminders", "loan-reminders")
    assert values(emf) == {
        "ItemsRead": 2,
        "NoticesSent": 2,
        "NoticesFailed": 0,
        "NoticesRetrying": 0,
        "NoticesUnknown": 0,
        "NoticesDeferred": 0,
        "NoticesSuppressed": 0,
        "ItemsInvalid": 1,
    }
    assert metric(emf, "RunDuration") >= 0


def test_each_check_reports_under_its_own_dimension(service: Settings, output: Output) -> None:
    for check in ("stale_applications", "note_reminders", "repayment_reminders"):
        run(check, MONDAY)

    documents, _ = output()
    assert [d["check"] for d in documents] == [
        "stale_applications",
        "note_reminders",
        "repayment_reminders",
    ]
    assert all(values(d) == dict.fromkeys(COUNTS, 0) for d in documents)


def test_metrics_are_flushed_when_the_run_raises_delivery_incomplete(
    service: Settings, ses: SESV2Client, output: Output
) -> None:
    # Given SES throttling Ben and rejecting Mia
    factories.repayment_due_to_two_borrowers()

    def faults(recipient: str) -> Fault:
        if recipient == BEN:
            return ses_error("Throttling", 400)
        return ses_error("MessageRejected", 400)

    # When the run ends in DeliveryIncomplete
    with ses_faults(ses, faults), pytest.raises(DeliveryIncomplete):
        run("repayment_reminders", MONDAY, ses)

    # Then its metrics were still published, once
    documents, _ = output()
    assert [values(d) for d in documents] == [
        {
            "ItemsRead": 1,
            "NoticesSent": 0,
            "NoticesFailed": 1,
            "NoticesRetrying": 1,
            "NoticesUnknown": 0,
            "NoticesDeferred": 0,
            "NoticesSuppressed": 0,
            "ItemsInvalid": 0,
        }
    ]


def test_runs_that_do_not_act_and_dry_runs_publish_no_metrics(
    service: Settings, output: Output
) -> None:
    factories.repayment_due_to_two_borrowers()

    run("repayment_reminders", sydney("2026-11-23 06:00"))  # outside the window
    run("repayment_reminders", MONDAY, dry_run=True)

    documents, _ = output()
    assert documents == []


def test_log_lines_mask_addresses_and_never_hold_an_email_body(
    service: Settings, ses: SESV2Client, output: Output
) -> None:
    # Given a note to its author and BDM, and SES rejecting the BDM with its address
    factories.crm()
    factories.application()
    factories.note(remind_date="2026-11-23", content="Secret valuation figure 1,234,567")
    brooke = "brooke.davis@lender.example.com.au"
    rejected = ses_error("MessageRejected", 400, f"Email address is not verified: {brooke}")

    # When the check runs (dry, then for real) with the JSON log at INFO
    with ses_faults(ses, lambda to: rejected if to == brooke else None):
        run("note_reminders", MONDAY, ses, dry_run=True)
        run("note_reminders", MONDAY, ses)

    # Then no log line holds an address or the note's text
    _, logs = output()
    text = "\n".join(json.dumps(record) for record in logs)
    assert {r["message"] for r in logs} >= {"run summary", "notice rejected permanently"}
    assert "b***@lender.example.com.au" in text
    assert "s***@lender.example.com.au" in text  # the dry run's list of recipients
    assert "brooke.davis@" not in text
    assert "sam.author@" not in text
    assert "Secret valuation" not in text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("ben.lee@example.net", "b***@example.net"),
        ("<Mia.Chen+crm@mail.example.com.au>, x@y.io", "<M***@mail.example.com.au>, x***@y.io"),
        ('{"recipient_email":"a@b.co"}', '{"recipient_email":"a***@b.co"}'),
        ("no address @ here", "no address @ here"),
        ("zoë.müller@exämple.net", "z***@exämple.net"),
        ("'Élodie@example.net', ben@bücher.example", "'***@example.net', b***@bücher.example"),
        ('{"to":"Łukasz@example.pl"}', '{"to":"Ł***@example.pl"}'),
    ],
)
def test_mask_addresses(text: str, masked: str) -> None:
    assert mask_addresses(text) == masked


def test_delivery_incomplete_masks_the_addresses_in_its_message(
    service: Settings, ses: SESV2Client
) -> None:
    factories.repayment_due_to_two_borrowers()
    throttled = ses_error("Throttling", 400, f"rate exceeded for {MIA}")

    with ses_faults(ses, lambda _: throttled), pytest.raises(DeliveryIncomplete) as raised:
        run("repayment_reminders", MONDAY, ses)

    assert "m***@example.net" in str(raised.value)
    assert MIA not in str(raised.value)


# --- through the Chalice functions -------------------------------------------------------


def test_a_scheduled_function_logs_the_event_id_and_publishes_its_metrics(
    client: Client, output: Output
) -> None:
    # Given a note due on 23 Nov
    factories.crm()
    factories.application()
    factories.note(remind_date="2026-11-23")
    at = utc("2026-11-23 01:00")

    # When EventBridge fires the note reminder function
    with freeze_time(at):
        client.lambda_.invoke(
            "check_note_reminders", scheduled_event(client, "check_note_reminders", at, EVENT_ID)
        )

    # Then its log lines carry the event id as correlation id, and its metrics are out
    documents, logs = output()
    summary = next(r for r in logs if r["message"] == "run summary")
    assert summary["correlation_id"] == EVENT_ID
    assert summary["service"] == "loan-reminders"
    assert [(d["check"], metric(d, "NoticesSent")) for d in documents] == [("note_reminders", 2)]


def test_the_manual_function_logs_its_request_id(client: Client, output: Output) -> None:
    factories.crm()

    with freeze_time("2026-11-23T01:00:00Z"):
        client.lambda_.invoke("run_check", {"check": "note_reminders", "date": "2026-11-23"})

    documents, logs = output()
    requested = next(r for r in logs if r["message"] == "manual run requested")
    summary = next(r for r in logs if r["message"] == "run summary")
    assert requested["correlation_id"]
    assert summary["correlation_id"] == requested["correlation_id"]
    assert requested["date"] == "2026-11-23"
    assert [d["check"] for d in documents] == ["note_reminders"]
