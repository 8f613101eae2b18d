"""Unit tests of the helpers the checks are built on: formatting, settings, models, mailer."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import jinja2
import pytest

from chalicelib import models
from chalicelib.config import ConfigError, Settings, Tables, Thresholds, Windows
from chalicelib.formatting import (
    au_date,
    money,
    one_line,
    parse_amount,
    parse_date,
    parse_timestamp,
    valid_email,
)
from chalicelib.mailer import Recipient, render
from chalicelib.runner import event_time, run_check
from ops.provisioning import provision
from tests.support import REGION

BASE_ENV = {
    "APPLICATIONS_TABLE": "u-applications",
    "NOTES_TABLE": "u-notes",
    "REPAYMENTS_TABLE": "u-repayments",
    "STAFF_TABLE": "u-staff",
    "BORROWERS_TABLE": "u-borrowers",
    "NOTIFICATIONS_TABLE": "u-notifications",
    "SENDER_EMAIL": "reminders@lender.example.com.au",
    "AWS_REGION": REGION,
}

BROOKE = Recipient(id="bdm-1", name="Brooke Davis", email="brooke.davis@lender.example.com.au")


# --- formatting: money -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (1000, "$1,000.00"),
        (0, "$0.00"),
        (2450.5, "$2,450.50"),
        (Decimal("1234567.891"), "$1,234,567.89"),
        (1234567.89, "$1,234,567.89"),
        (Decimal("999999999.995"), "$1,000,000,000.00"),
        (Decimal("2.345"), "$2.35"),
        (Decimal("2.344"), "$2.34"),
        (2.675, "$2.68"),
        (-5, "-$5.00"),
        (Decimal("-1234.565"), "-$1,234.57"),
        (Decimal("-0.004"), "$0.00"),
    ],
)
def test_money_formats_aud_with_thousands_separators_and_half_up_cents(
    amount: Any, expected: str
) -> None:
    assert money(amount) == expected


def test_au_date_is_day_month_year_with_leading_zeros() -> None:
    assert au_date(date(2026, 12, 1)) == "01/12/2026"
    assert au_date(date(2026, 1, 31)) == "31/01/2026"


# --- formatting: parsing CRM values ------------------------------------------------------


def test_parse_date_reads_iso_dates_and_tolerates_surrounding_spaces() -> None:
    assert parse_date("2026-11-23", "remind_date") == date(2026, 11, 23)
    assert parse_date(" 2026-11-23 ", "remind_date") == date(2026, 11, 23)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "due_date is missing"),
        ("", "due_date is missing"),
        ("2026-13-01", "due_date '2026-13-01' is not a YYYY-MM-DD date"),
        ("23/11/2026", "due_date '23/11/2026' is not a YYYY-MM-DD date"),
    ],
)
def test_parse_date_errors_name_the_field(value: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_date(value, "due_date")


def test_parse_timestamp_keeps_the_offset() -> None:
    parsed = parse_timestamp("2026-11-09T10:00:00+11:00", "stage_last_updated")

    assert parsed == datetime(2026, 11, 8, 23, 0, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=11)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "stage_last_updated is missing"),
        ("", "stage_last_updated is missing"),
        ("last tuesday", "stage_last_updated 'last tuesday' is not an ISO-8601 datetime"),
        ("2026-11-09T10:00:00", "stage_last_updated '2026-11-09T10:00:00' has no UTC offset"),
    ],
)
def test_parse_timestamp_errors_name_the_field(value: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_timestamp(value, "stage_last_updated")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2450.5, Decimal("2450.5")),
        (750000, Decimal("750000")),
        ("100.25", Decimal("100.25")),
        (Decimal("-3"), Decimal("-3")),
    ],
)
def test_parse_amount_returns_decimals(value: object, expected: Decimal) -> None:
    assert parse_amount(value, "amount") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "amount is missing"),
        (True, "amount is missing"),
        ("abc", "amount 'abc' is not a number"),
        ("1,000", "amount '1,000' is not a number"),
        ("NaN", "amount 'NaN' is not a number"),
        (float("inf"), "amount inf is not a number"),
    ],
)
def test_parse_amount_errors_name_the_field(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_amount(value, "amount")


# --- formatting: email addresses and header-safe text ------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "brooke.davis@lender.example.com.au",
        "ben.lee@example.net",
        "first.last+loans@sub-domain.example.com",
        "o'brien@example.org",
    ],
)
def test_valid_email_accepts_plain_addresses(address: str) -> None:
    assert valid_email(address) is True


@pytest.mark.parametrize(
    "address",
    [
        "",
        None,
        "a@b",
        "no-at-sign.example.com",
        "Brooke Davis <brooke@example.com>",
        "<brooke@example.com>",
        "brooke@example.com\r\nBcc: attacker@evil.example",
        "brooke@example.com\nBcc: attacker@evil.example",
        "brooke@example.com\r",
        "brooke@example.com, attacker@evil.example",
        "brooke@example.com;attacker@evil.example",
        "brooke davis@example.com",
        "brooke@-example.com",
        "brooke@example..com",
        "brooke@@example.com",
    ],
)
def test_valid_email_rejects_anything_but_one_plain_address(address: str | None) -> None:
    assert valid_email(address) is False


def test_one_line_collapses_every_kind_of_line_break() -> None:
    assert one_line("Call\r\nBcc: x@y.example") == "Call Bcc: x@y.example"
    assert one_line("a\nb\rc\td\u2028e\u2029f\x0bg\x0ch\x85i") == "a b c d e f g h i"
    assert one_line("  padded \n\n ") == "padded"


def test_one_line_caps_length_with_an_ellipsis() -> None:
    assert one_line("x" * 150) == "x" * 150
    capped = one_line("x" * 151)
    assert len(capped) == 150
    assert capped == "x" * 149 + "…"
    assert one_line("word " * 10, limit=11) == "word word…"


# --- config ------------------------------------------------------------------------------


def test_settings_from_env_uses_the_documented_defaults() -> None:
    settings = Settings.from_env(BASE_ENV)

    assert settings.tables == Tables(
        applications="u-applications",
        notes="u-notes",
        repayments="u-repayments",
        staff="u-staff",
        borrowers="u-borrowers",
        notifications="u-notifications",
    )
    assert settings.sender_email == "reminders@lender.example.com.au"
    assert settings.region == REGION
    assert settings.timezone == ZoneInfo("Australia/Sydney")
    assert settings.thresholds == Thresholds(
        stale_after_days=14,
        stale_repeat_days=7,
        note_catch_up_days=3,
        upcoming_days=7,
        overdue_days=3,
        urgent_days=7,
        escalation_days=10,
        escalation_until_days=17,
    )
    assert settings.windows == Windows(
        stale_applications_start=time(9),
        note_reminders_start=time(8),
        repayment_reminders_start=time(7),
        end=time(20),
    )


def test_settings_from_env_reads_the_process_environment_by_default() -> None:
    # The autouse conftest fixture sets the test stage's variables.
    settings = Settings.from_env()

    assert settings.tables.notes == "test-notes"
    assert settings.region == REGION


def test_settings_from_env_applies_overrides() -> None:
    env = {
        **BASE_ENV,
        "BUSINESS_TIMEZONE": "Australia/Perth",
        "STALE_AFTER_DAYS": "21",
        "STALE_REPEAT_DAYS": "3",
        "NOTE_CATCH_UP_DAYS": "0",
        "UPCOMING_DAYS": "5",
        "OVERDUE_DAYS": "2",
        "URGENT_DAYS": "6",
        "ESCALATION_DAYS": "12",
        "ESCALATION_UNTIL_DAYS": "30",
        "STALE_APPLICATIONS_START": "10:30",
        "NOTE_REMINDERS_START": "08:15",
        "REPAYMENT_REMINDERS_START": "06:00",
        "BUSINESS_DAY_END": "18:00",
        "SENDER_EMAIL": "  noreply@lender.example.com.au  ",
    }

    settings = Settings.from_env(env)

    assert settings.timezone == ZoneInfo("Australia/Perth")
    assert settings.sender_email == "noreply@lender.example.com.au"
    assert settings.thresholds == Thresholds(21, 3, 0, 5, 2, 6, 12, 30)
    assert settings.windows == Windows(time(10, 30), time(8, 15), time(6), time(18))
    assert settings.windows.stale_applications_start == time(10, 30)
    assert settings.windows.note_reminders_start == time(8, 15)
    assert settings.windows.repayment_reminders_start == time(6)


def test_settings_blank_optional_values_fall_back_to_defaults() -> None:
    env = {**BASE_ENV, "STALE_AFTER_DAYS": " ", "NOTE_REMINDERS_START": "", "BUSINESS_TIMEZONE": ""}

    settings = Settings.from_env(env)

    assert settings.thresholds.stale_after_days == 14
    assert settings.windows.note_reminders_start == time(8)
    assert settings.timezone == ZoneInfo("Australia/Sydney")


def test_settings_region_falls_back_to_aws_default_region() -> None:
    env = {k: v for k, v in BASE_ENV.items() if k != "AWS_REGION"}
    env["AWS_DEFAULT_REGION"] = "us-east-1"

    assert Settings.from_env(env).region == "us-east-1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"NOTES_TABLE": None}, "NOTES_TABLE is not set"),
        ({"NOTIFICATIONS_TABLE": "  "}, "NOTIFICATIONS_TABLE is not set"),
        ({"SENDER_EMAIL": None}, "SENDER_EMAIL is not set"),
        ({"SENDER_EMAIL": "a@example.com\r\nBcc: b@example.com"}, "SENDER_EMAIL must be a single"),
        ({"AWS_REGION": None}, "AWS_REGION (or AWS_DEFAULT_REGION) is not set"),
        ({"STALE_AFTER_DAYS": "two weeks"}, "STALE_AFTER_DAYS must be a whole number of days"),
        ({"UPCOMING_DAYS": "-1"}, "UPCOMING_DAYS must not be negative"),
        ({"STALE_REPEAT_DAYS": "0"}, "STALE_REPEAT_DAYS must be at least 1"),
        ({"URGENT_DAYS": "3"}, "OVERDUE_DAYS < URGENT_DAYS < ESCALATION_DAYS"),
        ({"ESCALATION_UNTIL_DAYS": "9"}, "ESCALATION_DAYS <= ESCALATION_UNTIL_DAYS"),
        ({"REPAYMENT_REMINDERS_START": "7am"}, "REPAYMENT_REMINDERS_START must be a local time"),
        ({"BUSINESS_DAY_END": "25:00"}, "BUSINESS_DAY_END must be a local time"),
        ({"BUSINESS_TIMEZONE": "Sydney"}, "BUSINESS_TIMEZONE 'Sydney' is not an IANA time zone"),
        ({"BUSINESS_TIMEZONE": "../etc/passwd"}, "BUSINESS_TIMEZONE '../etc/passwd' is not"),
    ],
)
def test_settings_errors_name_the_variable(changes: dict[str, str | None], message: str) -> None:
    env = {**BASE_ENV}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value

    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(env)


# --- ops.provisioning.provision ------------------------------------------------------------

EXPECTED_TABLES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "test-applications": {
        "stage-stage_last_updated-index": [("stage", "HASH"), ("stage_last_updated", "RANGE")]
    },
    "test-notes": {"remind_date-index": [("remind_date", "HASH")]},
    "test-repayments": {"due_date-index": [("due_date", "HASH")]},
    "test-staff": {},
    "test-borrowers": {},
    "test-notifications": {
        "item_id-index": [("item_id", "HASH"), ("created_at", "RANGE")],
        "recipient_email-index": [("recipient_email", "HASH"), ("created_at", "RANGE")],
        "failed_status-failed_at-index": [("failed_status", "HASH"), ("failed_at", "RANGE")],
        "send_token-index": [("send_token", "HASH")],
    },
}
# Indexes that project only the keys (the rest project every attribute).
KEYS_ONLY_INDEXES = {"send_token-index"}


def _describe(table: str) -> dict[str, Any]:
    return boto3.client("dynamodb", region_name=REGION).describe_table(TableName=table)["Table"]


def test_provision_creates_all_six_tables_with_their_indexes(aws: None, settings: Settings) -> None:
    # Given an empty account
    assert boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"] == []

    # When the tables are provisioned
    report = provision(settings)

    # Then every table exists with the key schema and indexes the checks query
    assert sorted(report) == sorted((name, "created") for name in EXPECTED_TABLES)
    for name, indexes in EXPECTED_TABLES.items():
        table = _describe(name)
        assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        found = {
            gsi["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]]
            for gsi in table.get("GlobalSecondaryIndexes", [])
        }
        assert found == indexes, name
        for gsi in table.get("GlobalSecondaryIndexes", []):
            expected = "KEYS_ONLY" if gsi["IndexName"] in KEYS_ONLY_INDEXES else "ALL"
            assert gsi["Projection"]["ProjectionType"] == expected


def test_provision_is_idempotent(aws: None, settings: Settings) -> None:
    provision(settings)
    models.Staff(id="bdm-1", name="Brooke Davis", email="brooke@example.com").save()

    second = provision(settings)

    assert sorted(second) == sorted((name, "exists") for name in EXPECTED_TABLES)
    assert models.Staff.get("bdm-1").name == "Brooke Davis"


def test_provision_creates_only_the_missing_tables(aws: None, settings: Settings) -> None:
    provision(settings)
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName="test-notes")

    report = dict(provision(settings))

    assert report["test-notes"] == "created"
    assert [name for name, outcome in report.items() if outcome == "exists"] == [
        name for name in EXPECTED_TABLES if name != "test-notes"
    ]
    assert "remind_date-index" in {
        gsi["IndexName"] for gsi in _describe("test-notes")["GlobalSecondaryIndexes"]
    }


def test_bind_points_the_models_at_the_stage_tables(aws: None) -> None:
    settings = Settings.from_env({**BASE_ENV, "AWS_REGION": REGION})

    models.bind(settings)

    assert models.Application.Meta.table_name == "u-applications"
    assert models.Notification.Meta.table_name == "u-notifications"
    assert models.Repayment.Meta.region == REGION


# --- mailer.render -----------------------------------------------------------------------

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
    "repayment_escalation": {
        "amount": "$2,450.50",
        "due_date": "30/11/2026",
        "reference": "APP-1001",
        "days_overdue": 10,
        "days_until_due": -10,
        "borrower_names": ["Ben Lee", "Mia Chen"],
    },
    "stale_applications": {"applications": [STALE_ROW], "threshold_days": 14},
}

# What each kind must show, in both the text and the HTML part.
TEMPLATE_FACTS: dict[str, list[str]] = {
    "note_reminder": ["Call the valuer", "Chase the valuation report.", "APP-1001", "23/11/2026"],
    "repayment_upcoming": ["$2,450.50", "30/11/2026", "APP-1001", "in 7 days"],
    "repayment_overdue": ["$2,450.50", "30/11/2026", "APP-1001", "3 days overdue"],
    "repayment_urgent": ["$2,450.50", "30/11/2026", "APP-1001", "7 days overdue"],
    "repayment_escalation": ["$2,450.50", "30/11/2026", "APP-1001", "Ben Lee, Mia Chen"],
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
    "repayment_escalation": "borrower_names",
    "stale_applications": "applications",
}


@pytest.mark.parametrize("template", sorted(TEMPLATE_CASES))
def test_render_produces_text_and_html_for_every_kind(template: str) -> None:
    email = render(template, BROOKE, "Subject line", TEMPLATE_CASES[template])

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
        render(template, BROOKE, "Subject line", context)


def test_render_escapes_html_only_in_the_html_part() -> None:
    context = {
        **TEMPLATE_CASES["note_reminder"],
        "title": "<script>alert(1)</script>",
        "content": "Tom & Jerry <b>bold</b>",
    }

    email = render("note_reminder", BROOKE, "Note Reminder: x", context)

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
    )

    assert email.subject == "Note Reminder: hi Bcc: attacker@evil.example"


def test_render_escalation_without_borrowers_says_so() -> None:
    context = {**TEMPLATE_CASES["repayment_escalation"], "borrower_names": []}

    email = render("repayment_escalation", BROOKE, "ESCALATION", context)

    assert "No borrowers on file" in email.text
    assert "No borrowers on file" in email.html


def test_render_upcoming_says_today_and_tomorrow() -> None:
    today = {**TEMPLATE_CASES["repayment_upcoming"], "days_overdue": 0, "days_until_due": 0}
    tomorrow = {**TEMPLATE_CASES["repayment_upcoming"], "days_overdue": -1, "days_until_due": 1}

    assert "(today)" in render("repayment_upcoming", BROOKE, "s", today).text
    assert "(tomorrow)" in render("repayment_upcoming", BROOKE, "s", tomorrow).html


def test_render_stale_digest_lists_every_row() -> None:
    second = {**STALE_ROW, "reference": "APP-1002", "stage": "ILOO Issued", "days_in_stage": 15}
    context = {"applications": [STALE_ROW, second], "threshold_days": 14}

    email = render("stale_applications", BROOKE, "Stale Application Alert: 2 applications", context)

    assert "These 2 applications have" in email.text
    assert "APP-1002: ILOO Issued, 15 days in stage" in email.text
    assert email.html.count("<td>APP-100") == 2


# --- runner.run_check argument checks and runner.event_time ------------------------------


def test_run_check_rejects_unknown_checks() -> None:
    at = datetime(2026, 11, 23, 9, tzinfo=UTC)

    expected = (
        "unknown check 'birthday_greetings'; expected one of "
        "stale_applications, note_reminders, repayment_reminders"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        run_check("birthday_greetings", at=at, now=at)


@pytest.mark.parametrize("naive", ["at", "now"])
def test_run_check_rejects_naive_datetimes(naive: str) -> None:
    aware = datetime(2026, 11, 23, 9, tzinfo=UTC)
    times = {"at": aware, "now": aware, naive: datetime(2026, 11, 23, 9)}  # noqa: DTZ001

    with pytest.raises(ValueError, match="'at' and 'now' must be timezone-aware"):
        run_check("note_reminders", **times)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-22T23:00:00Z", datetime(2026, 11, 22, 23, tzinfo=UTC)),
        ("2026-11-22T23:00:00+00:00", datetime(2026, 11, 22, 23, tzinfo=UTC)),
        ("2026-11-22T23:00:00", datetime(2026, 11, 22, 23, tzinfo=UTC)),
        ("2026-11-23T10:00:00+11:00", datetime(2026, 11, 22, 23, tzinfo=UTC)),
    ],
)
def test_event_time_reads_the_scheduled_instant(raw: str, expected: datetime) -> None:
    parsed = event_time({"time": raw, "detail-type": "Scheduled Event"})

    assert parsed == expected
    assert parsed.tzinfo is not None


def test_event_time_keeps_an_explicit_offset() -> None:
    parsed = event_time({"time": "2026-11-23T10:00:00+11:00"})

    assert parsed.utcoffset() == timedelta(hours=11)
    assert parsed.tzinfo == timezone(timedelta(hours=11))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "scheduled event has no 'time' field"),
        ({"time": None}, "scheduled event has no 'time' field"),
        ({"time": 1763852400}, "scheduled event has no 'time' field"),
        ({"time": "yesterday"}, "scheduled event time 'yesterday' is not ISO-8601"),
        ({"time": ""}, "scheduled event time '' is not ISO-8601"),
    ],
)
def test_event_time_rejects_events_without_a_usable_time(
    event: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        event_time(event)
