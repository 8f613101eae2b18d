"""How the CRM's values are shown to Australian readers, and how its text is parsed."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from chalicelib.limits import quoted

STAGE_LABELS: dict[str, str] = {
    "inquiry": "Inquiry",
    "sent_to_lender": "Sent to Lender",
    "funding_table_issued": "Funding Table Issued",
    "iloo_issued": "ILOO Issued",
    "iloo_signed": "ILOO Signed",
    "commitment_fee_paid": "Commitment Fee Paid",
    "app_submitted": "App Submitted",
    "valuation_ordered": "Valuation Ordered",
    "valuation_received": "Valuation Received",
    "more_info_required": "More Info Required",
    "formal_approval": "Formal Approval",
    "loan_docs_instructed": "Loan Docs Instructed",
    "loan_docs_issued": "Loan Docs Issued",
    "loan_docs_signed": "Loan Docs Signed",
    "settlement_conditions": "Settlement Conditions",
    "settled": "Settled",
    "closed": "Closed",
    "declined": "Declined",
    "withdrawn": "Withdrawn",
}
# No loan or repayment comes near this; anything at or above it is a data error.
MAX_AMOUNT = Decimal("1e15")
TERMINAL_STAGES = frozenset({"settled", "closed", "declined", "withdrawn"})
ACTIVE_STAGES: tuple[str, ...] = tuple(s for s in STAGE_LABELS if s not in TERMINAL_STAGES)

# A domain label of letters and digits (any script: an internationalised domain is sent
# in its ASCII form, see mailer.address_spec) with inner hyphens.
_LABEL = r"[^\W_](?:[^\W_]|-)*(?<!-)"
_EMAIL = re.compile(rf"[^@\s<>(),;:\"\[\]\\]+@{_LABEL}(?:\.{_LABEL})+")
# Characters no CRM text may carry into an email: C0 controls (NUL, tab, CR, LF, FS...),
# DEL, C1 controls (NEL...), bidi marks, embeddings, overrides and isolates (they can
# disguise what a reader sees), the Unicode line and paragraph separators, the byte-order
# mark, and lone surrogates (which cannot be encoded at all).
_NOT_C0 = r"\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ufeff\ud800-\udfff"
_UNSAFE_IN_LINE = re.compile(rf"[\x00-\x1f{_NOT_C0}\s]+")
# Every line break a body may use becomes "\n"; tab and "\n" are the only controls kept.
_BODY_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_UNSAFE_IN_BODY = re.compile(rf"[\x00-\x08\x0b-\x1f{_NOT_C0}]")


def money(amount: Decimal | float | int) -> str:
    """Format an amount in AUD: ``$1,000.00`` (negative as ``-$5.00``).

    Raises ``ValueError`` (never ``decimal.InvalidOperation``) for an amount that
    is not a finite number or too large to show in cents.
    """
    try:
        value = Decimal(str(amount)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        # quantize keeps a NaN, which only fails later, comparing it with zero.
        raise ValueError(f"{amount!r} cannot be shown as an amount in cents")
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def au_date(value: date) -> str:
    """Format a date the Australian way: ``01/12/2026``."""
    return value.strftime("%d/%m/%Y")


def parse_date(value: str | None, field: str) -> date:
    """Parse a ``YYYY-MM-DD`` CRM date, naming the field when it is absent or malformed."""
    if not value:
        raise ValueError(f"{field} is missing")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{field} {quoted(value)} is not a YYYY-MM-DD date") from None


def parse_timestamp(value: str | None, field: str) -> datetime:
    """Parse an ISO-8601 datetime that carries a UTC offset."""
    if not value:
        raise ValueError(f"{field} is missing")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{field} {quoted(value)} is not an ISO-8601 datetime") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{field} {quoted(value)} has no UTC offset")
    return parsed


def parse_amount(value: object, field: str) -> Decimal:
    """Return a CRM number as a Decimal, naming the field when it is absent or not finite."""
    if value is None or isinstance(value, bool):
        raise ValueError(f"{field} is missing")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{field} {value!r} is not a number") from None
    if not amount.is_finite():
        raise ValueError(f"{field} {value!r} is not a number")
    if abs(amount) >= MAX_AMOUNT:
        raise ValueError(f"{field} {value!r} is out of range")
    return amount


def valid_email(value: str | None) -> bool:
    """True when ``value`` is one plain address that cannot smuggle in headers."""
    return value is not None and _EMAIL.fullmatch(value) is not None


def one_line(text: str, limit: int = 150) -> str:
    """Untrusted text as one header-safe line, capped at ``limit`` characters.

    Every run of whitespace, line breaks and control, bidi or separator characters
    becomes one space, so nothing can end a header, start another or hide text.
    """
    flat = _UNSAFE_IN_LINE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def clean_body(text: str) -> str:
    """Untrusted text made safe for an email body: one kind of line break, no controls.

    Line breaks of every kind become ``\\n``; other control, bidi and separator
    characters are removed; tabs stay.
    """
    return _UNSAFE_IN_BODY.sub("", _BODY_BREAKS.sub("\n", text))
