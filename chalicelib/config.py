"""Settings read from the environment (set per stage in ``.chalice/config.json``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Thresholds:
    """Day counts that decide when a notice is due (all configurable)."""

    stale_after_days: int = 14
    stale_repeat_days: int = 7
    note_catch_up_days: int = 3
    upcoming_days: int = 7
    overdue_days: int = 3
    urgent_days: int = 7
    escalation_days: int = 10
    escalation_until_days: int = 17


@dataclass(frozen=True)
class Windows:
    """Business-time window in which each check acts (EventBridge fires hourly in UTC)."""

    stale_applications_start: time = time(9)
    note_reminders_start: time = time(8)
    repayment_reminders_start: time = time(7)
    end: time = time(20)


@dataclass(frozen=True)
class Reliability:
    """Limits that keep a run safe at the edges (all configurable)."""

    # A notice that failed transiently this many times is recorded as failed.
    max_transient_attempts: int = 24
    # A scheduled event older than this is refused (a replay from the DLQ, say).
    event_max_age_hours: int = 24
    # An ambiguous or interrupted send with no SES Send event after this long is due again.
    # Longer than Lambda's own retries of an event (1 and 3 minutes later).
    settle_minutes: int = 15
    # A run stops claiming new notices when less than this much Lambda time is left.
    time_margin_seconds: int = 30


@dataclass(frozen=True)
class SendLimits:
    """How fast a run sends (SES's own quota is read from the account each run)."""

    # The most sends in flight at once: worker threads, and the clients' connection pools.
    send_concurrency: int = 40
    # The share of the account's maximum send rate a run paces at; the rest absorbs
    # the timing jitter between pacing a send and SES receiving it.
    send_rate_percent: int = 95


@dataclass(frozen=True)
class Tables:
    """DynamoDB table names: the CRM's five tables and this service's ledger."""

    applications: str
    notes: str
    repayments: str
    staff: str
    borrowers: str
    notifications: str


@dataclass(frozen=True)
class Lender:
    """Who the emails come from: the stage's lender, shown in every message.

    ``name`` is the From display name and the sign-off; the footer carries
    ``legal_name``, ``abn`` and ``address``; ``phone`` and ``email`` are how people
    reach the lender, and replies go to ``reply_to``.
    """

    name: str
    legal_name: str
    abn: str
    address: str
    phone: str
    email: str
    reply_to: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Lender:
        """The lender's identity from ``LENDER_*`` variables, each required."""
        values = {name: _required(env, variable) for name, variable in LENDER_VARIABLES.items()}
        for name in ("email", "reply_to"):
            if not valid_address(values[name]):
                raise ConfigError(
                    f"{LENDER_VARIABLES[name]} must be one email address, got {values[name]!r}"
                )
        digits = values["abn"].replace(" ", "")
        if len(digits) != 11 or not digits.isdigit():
            raise ConfigError(f"LENDER_ABN must be an 11-digit ABN, got {values['abn']!r}")
        return cls(**values)


# Each field of Lender and its variable (all required: every email carries them).
LENDER_VARIABLES = {
    "name": "LENDER_NAME",
    "legal_name": "LENDER_LEGAL_NAME",
    "abn": "LENDER_ABN",
    "address": "LENDER_ADDRESS",
    "phone": "LENDER_PHONE",
    "email": "LENDER_EMAIL",
    "reply_to": "LENDER_REPLY_TO",
}
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def valid_address(value: str) -> bool:
    """True when ``value`` is one plain ASCII address (a header can carry it as it is)."""
    return _ADDRESS.fullmatch(value) is not None


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know about its environment."""

    tables: Tables
    sender_email: str
    timezone: ZoneInfo
    region: str
    lender: Lender
    thresholds: Thresholds = field(default_factory=Thresholds)
    windows: Windows = field(default_factory=Windows)
    reliability: Reliability = field(default_factory=Reliability)
    send: SendLimits = field(default_factory=SendLimits)
    dynamodb_endpoint: str | None = None
    # SES configuration set that publishes Send/Delivery/Bounce/... events; None: no events.
    ses_configuration_set: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables, failing with the variable's name."""
        env = os.environ if environ is None else environ
        tables = Tables(
            **{
                name: _required(env, f"{name.upper()}_TABLE")
                for name in Tables.__dataclass_fields__
            }
        )
        thresholds = _numbers(env, Thresholds)
        _check_thresholds(thresholds)
        reliability = _numbers(env, Reliability)
        if reliability.max_transient_attempts < 1:
            raise ConfigError("MAX_TRANSIENT_ATTEMPTS must be at least 1")
        send = _numbers(env, SendLimits)
        if send.send_concurrency < 1:
            raise ConfigError("SEND_CONCURRENCY must be at least 1")
        if not 1 <= send.send_rate_percent <= 100:
            raise ConfigError("SEND_RATE_PERCENT must be between 1 and 100")
        defaults = Windows()
        windows = Windows(
            **{
                name: _time(env, _WINDOW_VARIABLES.get(name, name.upper()), getattr(defaults, name))
                for name in Windows.__dataclass_fields__
            }
        )
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError("AWS_REGION (or AWS_DEFAULT_REGION) is not set")
        return cls(
            tables=tables,
            sender_email=_required(env, "SENDER_EMAIL"),
            timezone=_zone(env.get("BUSINESS_TIMEZONE") or "Australia/Sydney"),
            region=region,
            lender=Lender.from_env(env),
            thresholds=thresholds,
            windows=windows,
            reliability=reliability,
            send=send,
            dynamodb_endpoint=env.get("DYNAMODB_ENDPOINT_URL") or None,
            ses_configuration_set=env.get("SES_CONFIGURATION_SET", "").strip() or None,
        )


# Each setting's variable is its field's name in upper case, except these.
_WINDOW_VARIABLES = {"end": "BUSINESS_DAY_END"}
_N = TypeVar("_N", Thresholds, Reliability, SendLimits)


def _numbers(env: Mapping[str, str], kind: type[_N]) -> _N:
    """A dataclass of whole numbers, each from its upper-cased variable or its default."""
    defaults = kind()
    return kind(
        **{
            name: _int(env, name.upper(), getattr(defaults, name), _unit(name))
            for name in kind.__dataclass_fields__
        }
    )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    if "\r" in value or "\n" in value:
        raise ConfigError(f"{name} must be a single line")
    return value


def _int(env: Mapping[str, str], name: str, default: int, unit: str = "days") -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of {unit}, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _unit(name: str) -> str:
    """``settle_minutes`` -> ``minutes``; a count without a unit is of attempts."""
    unit = name.rsplit("_", 1)[-1]
    if unit == "concurrency":
        return "sends in flight"
    return unit if unit in ("days", "hours", "minutes", "seconds", "percent") else "attempts"


def _time(env: Mapping[str, str], name: str, default: time) -> time:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return time.fromisoformat(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a local time like 07:00, got {raw!r}") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"BUSINESS_TIMEZONE {name!r} is not an IANA time zone") from None


def _check_thresholds(t: Thresholds) -> None:
    if t.stale_repeat_days < 1:
        raise ConfigError("STALE_REPEAT_DAYS must be at least 1")
    if not t.overdue_days < t.urgent_days < t.escalation_days <= t.escalation_until_days:
        raise ConfigError(
            "repayment thresholds must satisfy "
            "OVERDUE_DAYS < URGENT_DAYS < ESCALATION_DAYS <= ESCALATION_UNTIL_DAYS"
        )
