"""Formatting CRM values: money, Australian dates, parsing CRM fields, addresses, header text."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from chalicelib.formatting import (
    au_date,
    clean_body,
    money,
    one_line,
    parse_amount,
    parse_date,
    parse_timestamp,
    valid_email,
)

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
    amount: Decimal | float | int, expected: str
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
        (Decimal("1e15"), "amount Decimal('1E+15') is out of range"),
        (Decimal("-1e15"), "amount Decimal('-1E+15') is out of range"),
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


@pytest.mark.parametrize("amount", [Decimal("NaN"), float("inf"), Decimal("1e30")])
def test_money_refuses_what_cannot_be_shown_in_cents_and_says_so(amount: object) -> None:
    with pytest.raises(ValueError, match=r"cannot be shown as an amount in cents$"):
        money(amount)  # type: ignore[arg-type]  # NaN and inf arrive as float or Decimal


# --- formatting: email bodies ---------------------------------------------------------------


def test_a_body_gets_one_kind_of_line_break_and_loses_its_control_characters() -> None:
    # Given CRM text with every kind of line break, a NUL, a bidi override and a tab
    text = "a\r\nb\rc\u2028d\u2029e\x0bf\x85g\x00h\u202ei\tj"

    # Then each break is one "\n", the controls are gone, and the tab stays
    assert clean_body(text) == "a\nb\nc\nd\ne\nf\ngh" + "i\tj"
