"""Render notices with Jinja2 and send them through Amazon SES (v2) as MIME messages."""

from __future__ import annotations

import base64
import binascii
import functools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32, default
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, cast

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)
from jinja2 import (
    BaseLoader,
    Environment,
    FileSystemLoader,
    ModuleLoader,
    StrictUndefined,
    select_autoescape,
)

from chalicelib import clients
from chalicelib.config import Lender
from chalicelib.formatting import clean_body, one_line
from chalicelib.sending import SYSTEM_CLOCK, Clock, SendQuota

if TYPE_CHECKING:  # the stubs are a dev dependency; Lambda never imports them
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import SendEmailRequestTypeDef

TEMPLATES = Path(__file__).parent / "templates"
# The templates compiled to Python at package time (ops/templates.py): the bundle only.
COMPILED_TEMPLATES = Path(__file__).parent / "templates_compiled"

# SES refuses these for this message only; sending it again cannot succeed.
PERMANENT_ERROR_CODES = frozenset(
    {"MessageRejected", "BadRequestException", "InvalidParameterValue"}
)


# SES refusing a send because the account sends too fast (or its daily quota is spent).
THROTTLING_ERROR_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException"}
)
# Connections the SES client keeps, unless told how many sends may be in flight.
DEFAULT_CONNECTIONS = 40


# The message tag that carries the send token of the ledger entries a message covers.
SEND_TAG = "send_token"


class SendError(Exception):
    """SES did not accept a message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientSendError(SendError):
    """SES provably did not take the message (throttled, paused, unreachable): retry later."""


class ThrottledSendError(TransientSendError):
    """SES refused the message because the account sent too fast: nothing was sent."""


class AmbiguousSendError(SendError):
    """SES may have accepted the message (a lost response, a 5xx): never resent blindly."""


class PermanentSendError(SendError):
    """SES rejected this message (bad address, rejected content): recorded, not retried."""


class MessageBuildError(PermanentSendError):
    """The message cannot be built safely (an address SES cannot take, a header block
    that fails verification): sending it again cannot succeed, so it is not retried."""


@dataclass(frozen=True)
class Recipient:
    """Who a notice goes to: a staff member or a borrower."""

    id: str
    name: str
    email: str
    # The CRM's first name, when it has one: the greeting uses it.
    first_name: str | None = None

    @property
    def greeting_name(self) -> str:
        """What the email calls the recipient: the first name if known, else the name."""
        return one_line(self.first_name or "", 80) or self.name


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
        loader=_loader(),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _loader() -> BaseLoader:
    # Loading a compiled template skips Jinja's compiler: 4-5 ms a template on a cold start.
    if COMPILED_TEMPLATES.is_dir():
        return ModuleLoader(COMPILED_TEMPLATES)
    return FileSystemLoader(TEMPLATES)


def render(
    template: str,
    to: Recipient,
    subject: str,
    context: Mapping[str, object],
    *,
    lender: Lender,
) -> Email:
    """Render ``<template>.html`` and ``<template>.txt`` with ``context`` for ``to``.

    Every template also gets ``greeting`` (the first name when the CRM has one),
    ``subject`` and ``lender`` (the contact lines and the footer).
    """
    env = _environment()
    full = {
        "greeting": to.greeting_name,
        "subject": subject,
        "lender": lender,
        **context,
    }
    return Email(
        to=to,
        subject=one_line(subject),
        text=env.get_template(f"{template}.txt").render(full),
        html=env.get_template(f"{template}.html").render(full),
    )


# The headers every notice carries after the ones the builder sets (the MIME structure).
MIME_HEADERS: tuple[str, ...] = ("MIME-Version", "Content-Type")
# RFC 5322's hard limit on a line, CRLF excluded.
MAX_LINE = 998

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Text shown as it is (in quotes for a display name); anything else is encoded.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .'-]*")
_PLAIN_TEXT = re.compile(r"[ -~]*")
# UTF-8 bytes per encoded word: base64 of 45 bytes keeps each word under 75 characters.
_WORD_BYTES = 45


def address_spec(address: str) -> str:
    """The ``local@domain`` SES can send to, checked; or :class:`MessageBuildError`.

    The local part must be ASCII (SES cannot send to anything else); an
    internationalised domain is written in its ASCII (punycode) form.
    """
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        raise MessageBuildError(
            "recipient address has a local part SES cannot send to (it must be plain ASCII)"
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise MessageBuildError("recipient address has a domain that cannot be encoded") from None
    labels = ascii_domain.split(".")
    if (
        len(labels) < 2
        or len(ascii_domain) > 253
        or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
    ):
        raise MessageBuildError("recipient address has an invalid domain")
    return f"{local}@{ascii_domain}"


def encoded_words(text: str) -> str:
    """``text`` as RFC 2047 base64 UTF-8 encoded words, folded one word per line."""
    words: list[str] = []
    chunk = ""
    for char in text:
        if len((chunk + char).encode("utf-8")) > _WORD_BYTES:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    return "\r\n ".join(
        f"=?utf-8?b?{base64.b64encode(word.encode('utf-8')).decode('ascii')}?=" for word in words
    )


def header_text(text: str) -> str:
    """Untrusted text for an unstructured header (Subject), encoded by us.

    Printable ASCII without ``=?`` is written as it is; anything else becomes
    base64 encoded words, so no parser can read a line break, a header or an
    encoded word of the CRM's own into it.
    """
    flat = one_line(text, MAX_LINE // 2)
    if _PLAIN_TEXT.fullmatch(flat) and "=?" not in flat:
        return flat
    return encoded_words(flat)


def mailbox(name: str, address: str) -> str:
    """``"Display Name" <local@domain>`` with the name quoted or encoded by us."""
    spec = address_spec(address)
    display = one_line(name, 80)
    if not display:
        return f"<{spec}>"
    if _PLAIN_NAME.fullmatch(display):
        return f'"{display}" <{spec}>'
    return f"{encoded_words(display)} <{spec}>"


def message_id(sender: str) -> str:
    """A new ``Message-ID``, unique per message, on the sender's domain."""
    return f"<{uuid.uuid4().hex}@{address_spec(sender).rpartition('@')[2]}>"


def header_block(
    email: Email,
    sender: str,
    *,
    date: datetime,
    msg_id: str,
    lender: Lender | None = None,
) -> list[tuple[str, str]]:
    """The notice's headers as ``(name, value)`` pairs, every value encoded by us.

    With a ``lender``, From shows its name and replies go to its ``Reply-To``; the
    lender's text comes from configuration, and is encoded like the CRM's. ``date``
    is the run's time (an aware datetime). These and :data:`MIME_HEADERS` are the
    only headers a notice may carry; :func:`verify` checks exactly this list, so a
    header added here is verified too.
    """
    headers = [
        ("From", mailbox(lender.name, sender) if lender else address_spec(sender)),
        ("To", mailbox(email.to.name, email.to.email)),
    ]
    if lender is not None:
        headers.append(("Reply-To", mailbox(lender.name, lender.reply_to)))
    return [
        *headers,
        ("Subject", header_text(email.subject)),
        ("Date", format_datetime(date)),
        ("Message-ID", msg_id),
    ]


def _part(subtype: str, text: str) -> bytes:
    """One ``text/<subtype>`` part: its headers, then the text as quoted-printable UTF-8.

    ``binascii.b2a_qp`` (C) rather than the ``email`` package's builder: the builder's
    header registry cost more CPU than anything else in a send, and the result is the
    same part. The text is given CRLF line breaks and a final one first, because
    ``b2a_qp`` writes its soft line breaks in the style of the first break it finds.
    """
    lines = clean_body(text).removesuffix("\n").split("\n")
    encoded = binascii.b2a_qp(("\r\n".join(lines) + "\r\n").encode("utf-8"), istext=True)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii") + encoded


def _body(email: Email) -> bytes:
    """The multipart/alternative body (its MIME headers first), quoted-printable UTF-8.

    The boundary holds ``=_``, which quoted-printable text can never contain (its
    ``=`` is always followed by two hex digits or a line break), so no body can end
    a part early.
    """
    boundary = f"=_{uuid.uuid4().hex}"
    delimiter = f"--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"'
            "\r\n\r\n".encode("ascii"),
            delimiter,
            _part("plain", email.text),
            b"\r\n",
            delimiter,
            _part("html", email.html),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )


def to_mime(
    email: Email,
    sender: str,
    *,
    date: datetime,
    lender: Lender | None = None,
    msg_id: str | None = None,
) -> bytes:
    """The raw message: our header block, then the body; verified before it is returned.

    Untrusted text never reaches a header raw and the library never re-parses a
    header we set. ``msg_id`` defaults to a new :func:`message_id`. Raises
    :class:`MessageBuildError` when the message cannot be built or fails
    :func:`verify`: sending it again could not succeed.
    """
    if date.tzinfo is None:
        raise MessageBuildError("the message's date has no time zone")
    headers = header_block(
        email, sender, date=date, msg_id=msg_id or message_id(sender), lender=lender
    )
    try:
        body = _body(email)
    except (ValueError, TypeError) as exc:
        raise MessageBuildError(f"message body cannot be built: {type(exc).__name__}") from None
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    raw = head.encode("ascii") + body
    verify(raw, headers, address_spec(email.to.email))
    return raw


def verify(raw: bytes, headers: list[tuple[str, str]], recipient: str) -> None:
    """Parse ``raw`` back and refuse it unless it is exactly the message we meant.

    It must be 7-bit clean with CRLF lines of at most 998 characters; its top-level
    headers must be exactly ``headers`` (values included) then :data:`MIME_HEADERS`;
    and ``To`` must hold exactly one address, ``recipient``, both as written and as
    the ``email`` package decodes it (no ``Cc``, no ``Bcc``, no second ``To``).
    """
    if not raw.isascii():
        raise MessageBuildError("message is not 7-bit clean")
    lines = raw.split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        raise MessageBuildError("message has a bare CR or LF")
    if any(len(line) > MAX_LINE for line in lines):
        raise MessageBuildError(f"message has a line longer than {MAX_LINE} characters")
    as_written = BytesHeaderParser(policy=compat32).parsebytes(raw)
    expected = [name.lower() for name, _ in headers] + [name.lower() for name in MIME_HEADERS]
    if [name.lower() for name in as_written] != expected:
        raise MessageBuildError("header block does not have exactly the headers set")
    for name, value in headers:
        if str(as_written[name]).replace("\r\n", "") != value.replace("\r\n", ""):
            raise MessageBuildError(f"{name} header does not read back as written")
    written_to = getaddresses([str(as_written["To"])])
    # The value as stored is the same under every policy; the default policy's header
    # factory reads it exactly as a parse of the whole message under that policy would.
    raw_to = next(value for name, value in as_written.raw_items() if name.lower() == "to")
    decoded_to = default.header_fetch_parse("To", raw_to).addresses
    if [addr for _, addr in written_to] != [recipient] or [a.addr_spec for a in decoded_to] != [
        recipient
    ]:
        raise MessageBuildError("To header does not hold exactly the intended recipient")


# The connection failed before the request was written: SES never saw the message.
NOT_SENT_ERRORS = (EndpointConnectionError, ConnectTimeoutError)

_default_clients: dict[str, SESV2Client] = {}


def ses_client(region: str, connections: int = DEFAULT_CONNECTIONS) -> SESV2Client:
    """Return the SESv2 client for ``region``, made once per container from its session.

    Its connection pool holds ``connections`` (one for every send a run has in
    flight), as the container's settings say when it is first made.
    """
    if region not in _default_clients:
        # botocore-stubs type a botocore session's clients as plain BaseClients.
        _default_clients[region] = cast(
            "SESV2Client",
            clients.session().create_client(
                "sesv2",
                region_name=region,
                # No automatic retries: botocore would re-send after a read timeout or a
                # 5xx, when SES may already have accepted the message (a duplicate).
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": 1},
                    connect_timeout=5,
                    read_timeout=15,
                    max_pool_connections=connections,
                ),
            ),
        )
    return _default_clients[region]


class Mailer:
    """Sends rendered notices from the verified sender address."""

    def __init__(
        self,
        sender: str,
        region: str,
        client: SESV2Client | None = None,
        configuration_set: str | None = None,
        *,
        lender: Lender | None = None,
        connections: int = DEFAULT_CONNECTIONS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.sender = sender
        # Its name is the From display name, its Reply-To the replies' address.
        self.lender = lender
        self._region = region
        self._client = client
        self._connections = connections
        self.configuration_set = configuration_set
        # The clock a run's sends are paced by.
        self.clock = clock

    @property
    def client(self) -> SESV2Client:
        """The SESv2 client (injected, or the shared lazily created one)."""
        if self._client is None:
            self._client = ses_client(self._region, self._connections)
        return self._client

    def send_quota(self) -> SendQuota:
        """The account's sending limits (SESv2 ``GetAccount``); botocore's errors propagate."""
        account = self.client.get_account()
        quota = account["SendQuota"]
        return SendQuota(
            max_send_rate=float(quota.get("MaxSendRate", 0.0)),
            max_24_hour_send=float(quota.get("Max24HourSend", -1.0)),
            sent_last_24_hours=float(quota.get("SentLast24Hours", 0.0)),
            sending_enabled=bool(account.get("SendingEnabled", True)),
        )

    def send(
        self,
        email: Email,
        token: str | None = None,
        *,
        date: datetime,
        pace: Callable[[], object] | None = None,
    ) -> str:
        """Send ``email`` dated ``date`` (the run's time); return the SES message id, or
        raise a :class:`SendError`.

        With a configuration set, the message is tagged ``send_token=<token>`` so the
        SES events it publishes (Send, Delivery, Bounce, ...) find its ledger entries.
        ``pace`` (a run's pacer) is waited on once the message is built, just before the
        request: what SES counts is when requests arrive, so nothing slow may sit between.
        """
        raw = to_mime(email, self.sender, date=date, lender=self.lender)
        request: SendEmailRequestTypeDef = {
            "FromEmailAddress": self.sender,
            "Content": {"Raw": {"Data": raw}},
        }
        if self.configuration_set:
            request["ConfigurationSetName"] = self.configuration_set
            if token:
                request["EmailTags"] = [{"Name": SEND_TAG, "Value": token}]
        if pace is not None:
            pace()
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
    if code in THROTTLING_ERROR_CODES or "Maximum sending rate exceeded" in reason:
        return ThrottledSendError(reason)
    if isinstance(status, int) and status >= 500:
        return AmbiguousSendError(reason)
    return TransientSendError(reason)
