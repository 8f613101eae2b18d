"""DynamoDB's key-size limits, checked before any request that would carry a key.

A key over its limit fails the whole BatchGetItem, Query or UpdateItem with a
``ValidationException`` on real DynamoDB (moto does not enforce these limits), so
one oversized CRM id or reference must be caught here and reported as invalid.
"""

from __future__ import annotations

# Bytes of UTF-8: a partition key (index keys included), and a sort key.
PARTITION_KEY_BYTES = 2048
SORT_KEY_BYTES = 1024
# The longest address SMTP can carry (RFC 5321); longer ones are not addresses.
EMAIL_CHARS = 254
# How much of an id a report shows.
REPORTED_ID_CHARS = 100


def key_bytes(value: str) -> int:
    """The size DynamoDB counts for a string key: its UTF-8 bytes."""
    return len(value.encode("utf-8", errors="surrogatepass"))


def fits_key(value: str, limit: int = PARTITION_KEY_BYTES) -> bool:
    """True when ``value`` can be a key (non-empty, at most ``limit`` bytes)."""
    return bool(value) and key_bytes(value) <= limit


def key_problem(what: str, value: str, limit: int = PARTITION_KEY_BYTES) -> str | None:
    """Why ``value`` cannot be used as the key ``what``, or ``None`` when it can."""
    if not value:
        return f"{what} is empty"
    if key_bytes(value) > limit:
        # No size in the reason: one item's keys for several recipients are one problem.
        return f"{what} is over DynamoDB's {limit}-byte key limit"
    return None


def shorten(text: str, limit: int = REPORTED_ID_CHARS) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for reports and logs."""
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: object) -> str:
    """``repr(value)`` for a report, a long string shortened first."""
    return repr(shorten(value)) if isinstance(value, str) else repr(value)
