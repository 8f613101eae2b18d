"""Settings read from the environment: defaults, overrides and errors that name the variable."""

from __future__ import annotations

import re
from datetime import time
from zoneinfo import ZoneInfo

import pytest

from chalicelib.config import (
    LENDER_VARIABLES,
    ConfigError,
    Lender,
    SendLimits,
    Settings,
    Tables,
    Thresholds,
    Windows,
)
from ops.stages import stage_environment, stage_names
from tests.support import BASE_ENV, REGION


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
    assert settings.send == SendLimits(send_concurrency=40, send_rate_percent=95)


def test_settings_read_how_fast_a_run_sends() -> None:
    env = {**BASE_ENV, "SEND_CONCURRENCY": "4", "SEND_RATE_PERCENT": "100"}

    assert Settings.from_env(env).send == SendLimits(send_concurrency=4, send_rate_percent=100)


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
        ({"SEND_CONCURRENCY": "0"}, "SEND_CONCURRENCY must be at least 1"),
        ({"SEND_CONCURRENCY": "many"}, "SEND_CONCURRENCY must be a whole number of sends in"),
        ({"SEND_RATE_PERCENT": "0"}, "SEND_RATE_PERCENT must be between 1 and 100"),
        ({"SEND_RATE_PERCENT": "101"}, "SEND_RATE_PERCENT must be between 1 and 100"),
        ({"SEND_RATE_PERCENT": "95%"}, "SEND_RATE_PERCENT must be a whole number of percent"),
        *[({name: None}, f"{name} is not set") for name in LENDER_VARIABLES.values()],
        ({"LENDER_NAME": "Example\r\nBcc: b@example.com"}, "LENDER_NAME must be a single line"),
        ({"LENDER_ABN": "12 345 678"}, "LENDER_ABN must be an 11-digit ABN, got '12 345 678'"),
        ({"LENDER_ABN": "12 345 678 90x"}, "LENDER_ABN must be an 11-digit ABN"),
        ({"LENDER_EMAIL": "loans at example"}, "LENDER_EMAIL must be one email address"),
        ({"LENDER_REPLY_TO": "a@x.example, b@x.example"}, "LENDER_REPLY_TO must be one email"),
        ({"LENDER_REPLY_TO": "zoë@example.com"}, "LENDER_REPLY_TO must be one email address"),
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


def test_the_lender_identity_comes_from_its_variables() -> None:
    settings = Settings.from_env(
        {**BASE_ENV, "LENDER_NAME": " Prêts Zoë ", "LENDER_ABN": "51824753556"}
    )

    assert settings.lender == Lender(
        name="Prêts Zoë",
        legal_name="Example Home Loans Pty Ltd",
        abn="51824753556",
        address="PO Box 1234, Sydney NSW 2001",
        phone="1300 000 000",
        email="loans@lender.example.com.au",
        reply_to="loans@lender.example.com.au",
    )


@pytest.mark.parametrize("stage", stage_names())
def test_every_stage_configures_a_complete_lender_identity(stage: str) -> None:
    env = stage_environment(stage)

    lender = Lender.from_env(env)

    assert set(LENDER_VARIABLES.values()) <= set(env)
    assert lender.legal_name.endswith("Pty Ltd")
