"""Render notices with Jinja2 and send them through Amazon SES (v2) as MIME messages."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from chalicelib.formatting import one_line

TEMPLATES = Path(__file__).parent / "templates"

# SES refuses these for this message only; sending it again cannot succeed.
PERMANENT_ERROR_CODES = frozenset(
    {"MessageRejected", "BadRequestException", "InvalidParameterValue"}
)


# The message tag that carries the send token of the ledger entries a message covers.
SEND_TAG = "send_token"


class SendError(Exception):
    """SES did not accept a message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """SES provably did not take the message (throttled, paused, unreachable): retry later."""


class AmbiguousSendError(SendError):
    """SES may have accepted the message (a lost response, a 5xx): never resent blindly."""


class PermanentSendError(SendError):
    """SES rejected this message (bad address, rejected content): recorded, not retried."""


@dataclass(frozen=True)
class Recipient:
    """Who a notice goes to: a staff member or a borrower."""

    id: str
    name: str
    email: str


@dataclass(frozen=True)
class Email:
    """A rendered notice, ready to send."""

    to: Recipient
    subject: str
    text: str
    html: str


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, to: Recipient, subject: str, context: dict[str, Any]) -> Email:
    """Render ``<template>.html`` and ``<template>.txt`` with ``context`` for ``to``."""
    env = _environment()
    full = {"recipient": to, "subject": subject, **context}
    return Email(
        to=to,
        subject=one_line(subject),
        text=env.get_template(f"{template}.txt").render(full),
        html=env.get_template(f"{template}.html").render(full),
    )


def to_mime(email: Email, sender: str) -> EmailMessage:
    """Build the multipart/alternative message; untrusted text never reaches a header raw."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = Address(display_name=one_line(email.to.name, 80), addr_spec=email.to.email)
    message["Subject"] = one_line(email.subject)
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


# The connection failed before the request was written: SES never saw the message.
NOT_SENT_ERRORS = (EndpointConnectionError, ConnectTimeoutError)

_default_clients: dict[str, Any] = {}


def ses_client(region: str) -> Any:
    """Return the SESv2 client for ``region``, created once per warm container."""
    if region not in _default_clients:
        _default_clients[region] = boto3.client(
            "sesv2",
            region_name=region,
            # No automatic retries: botocore would re-send after a read timeout or a
            # 5xx, when SES may already have accepted the message (a duplicate).
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=15,
            ),
        )
    return _default_clients[region]


class Mailer:
    """Sends rendered notices from the verified sender address."""

    def __init__(
        self,
        sender: str,
        region: str,
        client: Any | None = None,
        configuration_set: str | None = None,
    ) -> None:
        self.sender = sender
        self._region = region
        self._client = client
        self.configuration_set = configuration_set

    @property
    def client(self) -> Any:
        """The SESv2 client (injected, or the shared lazily created one)."""
        if self._client is None:
            self._client = ses_client(self._region)
        return self._client

    def send(self, email: Email, token: str | None = None) -> str:
        """Send ``email`` and return the SES message id, or raise a :class:`SendError`.

        With a configuration set, the message is tagged ``send_token=<token>`` so the
        SES events it publishes (Send, Delivery, Bounce, ...) find its ledger entries.
        """
        raw = to_mime(email, self.sender).as_bytes()
        request: dict[str, Any] = {
            "FromEmailAddress": self.sender,
            "Content": {"Raw": {"Data": raw}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
            if token:
                request["EmailTags"] = [{"Name": SEND_TAG, "Value": token}]
        try:
            response = self.client.send_email(**request)
        except ClientError as exc:
            raise classify_client_error(exc) from exc
        except NOT_SENT_ERRORS as exc:
            raise TransientSendError(f"{type(exc).__name__}: {exc}") from exc
        except BotoCoreError as exc:
            raise AmbiguousSendError(f"{type(exc).__name__}: {exc}") from exc
        return str(response["MessageId"])


def classify_client_error(exc: ClientError) -> SendError:
    """What an SES error answer means for the notice.

    A 4xx answer is SES refusing the request, so nothing was sent: permanent for
    this message's own faults, transient otherwise (throttling, a paused account).
    A 5xx may come after SES accepted the message, so its outcome is unknown.
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    reason = f"{code}: {error.get('Message', '')}".strip()
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in PERMANENT_ERROR_CODES:
        return PermanentSendError(reason)
    if isinstance(status, int) and status >= 500:
        return AmbiguousSendError(reason)
    return TransientSendError(reason)
