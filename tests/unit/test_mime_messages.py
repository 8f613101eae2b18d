"""The raw messages the mailer builds, and how it reads SES's answers.

Addresses SES can take, RFC 2047 encoded words and their limits, the header block
and its verification, the MIME body, the send request (configuration set, tag) and
the classification of SES's errors. The checks' tests send through moto; these pin
the edges directly.
"""

from __future__ import annotations

import base64
import email
import re
from dataclasses import replace
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

from chalicelib import mailer
from chalicelib.formatting import one_line
from chalicelib.mailer import (
    AmbiguousSendError,
    Email,
    Mailer,
    MessageBuildError,
    PermanentSendError,
    Recipient,
    ThrottledSendError,
    TransientSendError,
)
from chalicelib.sending import SendQuota
from tests.support import LENDER, REGION, SENDER, ses_error, sydney

# The run's time a message is dated by (business time), and a Message-ID to compare.
AT = sydney("2026-11-23 12:00")
MSG_ID = "<0123456789abcdef@lender.example.com.au>"

# The longest domain there can be: 253 characters.
DOMAIN_253 = ".".join(["a" * 63] * 3 + ["a" * 61])
BEN = Recipient(id="bor-1", name="Ben Lee", email="ben.lee@example.net")
LOCAL_PART = "recipient address has a local part SES cannot send to (it must be plain ASCII)"
INVALID_DOMAIN = "recipient address has an invalid domain"


def notice(
    to: Recipient = BEN, subject: str = "Upcoming Repayment Reminder", text: str = "Hello"
) -> Email:
    return Email(to=to, subject=subject, text=text, html=f"<p>{text}</p>")


def email_parts(raw: bytes) -> list[EmailMessage]:
    """The text and HTML parts of a raw message, parsed."""
    parsed = email.message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return list(parsed.iter_parts())  # type: ignore[arg-type]


def words(header: str) -> list[bytes]:
    """The decoded bytes of each encoded word in a header value we wrote."""
    out = []
    for word in header.split("\r\n "):
        assert word.startswith("=?utf-8?b?")
        assert word.endswith("?=")
        out.append(base64.b64decode(word.removeprefix("=?utf-8?b?").removesuffix("?=")))
    return out


# --- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "spec"),
    [
        (" ben.lee@example.net ", "ben.lee@example.net"),
        ("a" * 64 + "@example.net", "a" * 64 + "@example.net"),
        ("ben@bücher.example", "ben@xn--bcher-kva.example"),
        ("ben@" + "a" * 63 + ".example", "ben@" + "a" * 63 + ".example"),
        ("x@" + DOMAIN_253, "x@" + DOMAIN_253),
    ],
    ids=["trimmed", "64-char-local", "idn", "63-char-label", "253-char-domain"],
)
def test_an_address_ses_can_take_is_written_as_ascii(address: str, spec: str) -> None:
    assert mailer.address_spec(address) == spec


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("ben.lee", LOCAL_PART),
        ("@example.net", LOCAL_PART),
        ("a" * 65 + "@example.net", LOCAL_PART),
        ("bén@example.net", LOCAL_PART),
        ("ben..lee@example.net", LOCAL_PART),
        ("ben@lee@example.net", LOCAL_PART),
        ("ben@localhost", INVALID_DOMAIN),
        ("x@" + DOMAIN_253 + "a", INVALID_DOMAIN),
        ("ben@" + "a" * 64 + ".example", INVALID_DOMAIN),
        ("ben@-example.net", INVALID_DOMAIN),
        ("ben@exa mple.net", INVALID_DOMAIN),
        ("ben@\ud800.example", "recipient address has a domain that cannot be encoded"),
    ],
    ids=[
        "no-at",
        "empty-local",
        "65-char-local",
        "non-ascii-local",
        "double-dot",
        "two-ats",
        "one-label",
        "254-char-domain",
        "64-char-label",
        "leading-hyphen",
        "space",
        "unencodable-domain",
    ],
)
def test_an_address_ses_cannot_take_is_a_build_error(address: str, problem: str) -> None:
    with pytest.raises(MessageBuildError) as raised:
        mailer.address_spec(address)
    assert raised.value.reason == problem
    assert isinstance(raised.value, PermanentSendError)


# --- header text ---------------------------------------------------------------------------


def test_each_message_has_a_boundary_no_quoted_printable_text_can_hold() -> None:
    # Given two messages whose text is made of boundary-like lines
    text = "--=_\n--None\n=_ =3D_"
    raws = [mailer.to_mime(notice(text=text), SENDER, date=AT) for _ in range(2)]

    # Then each boundary holds "=_" (quoted-printable writes "=" only before two hex digits
    # or a line break), is its own, and the text comes back whole from both parts
    boundaries = [
        email.message_from_bytes(raw, policy=default).get_boundary() or "" for raw in raws
    ]
    assert all(b.startswith("=_") and len(b) > 2 for b in boundaries)
    assert boundaries[0] != boundaries[1]
    for raw in raws:
        plain, html = (part.get_content().replace("\r\n", "\n") for part in email_parts(raw))
        assert (plain, html) == (text + "\n", f"<p>{text}</p>\n")


def test_plain_ascii_header_text_is_written_as_it_is() -> None:
    assert mailer.header_text("Upcoming Repayment Reminder") == "Upcoming Repayment Reminder"


def test_header_text_is_capped_at_half_a_line() -> None:
    assert mailer.header_text("x" * 499) == "x" * 499
    capped = mailer.header_text("x" * 500)
    assert b"".join(words(capped)).decode("utf-8") == "x" * 498 + "…"


@pytest.mark.parametrize("text", ["Café", "=?utf-8?q?evil?=", "日本"], ids=["utf8", "word", "cjk"])
def test_other_header_text_becomes_encoded_words(text: str) -> None:
    encoded = mailer.header_text(text)
    assert b"".join(words(encoded)).decode("utf-8") == one_line(text, 499)


def test_each_encoded_word_holds_at_most_45_bytes_and_never_splits_a_character() -> None:
    # 45 one-byte characters fit one word; the 46th starts a second
    assert words(mailer.encoded_words("é" + "a" * 43)) == ["é".encode() + b"a" * 43]
    assert words(mailer.encoded_words("é" + "a" * 44)) == ["é".encode() + b"a" * 43, b"a"]
    # A two-byte character that would make 46 bytes goes to the next word whole
    assert words(mailer.encoded_words("a" * 44 + "é")) == [b"a" * 44, "é".encode()]
    encoded = mailer.encoded_words("é" * 100)
    assert all(len(line) <= 76 for line in encoded.split("\r\n"))
    assert [len(w) for w in words(encoded)] == [44, 44, 44, 44, 24]


def test_a_mailbox_quotes_a_plain_name_and_encodes_any_other() -> None:
    assert mailer.mailbox("Ben Lee", "ben.lee@example.net") == '"Ben Lee" <ben.lee@example.net>'
    assert mailer.mailbox("  ", "ben.lee@example.net") == "<ben.lee@example.net>"
    encoded = mailer.mailbox('Ben "Boss" Lee', "ben.lee@example.net")
    assert encoded.endswith(" <ben.lee@example.net>")
    assert b"".join(words(encoded.removesuffix(" <ben.lee@example.net>"))) == b'Ben "Boss" Lee'


def test_a_mailbox_name_is_cut_at_80_characters() -> None:
    address = "ben.lee@example.net"
    assert mailer.mailbox("B" * 80, address) == f'"{"B" * 80}" <{address}>'
    cut = mailer.mailbox("B" * 81, address).removesuffix(f" <{address}>")
    assert b"".join(words(cut)).decode("utf-8") == "B" * 79 + "…"


# --- the raw message -----------------------------------------------------------------------


def test_a_message_is_our_header_block_then_a_quoted_printable_alternative_body() -> None:
    raw = mailer.to_mime(notice(text="Héllo"), SENDER, date=AT, msg_id=MSG_ID)

    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    assert head[:5] == [
        f"From: {SENDER}",
        'To: "Ben Lee" <ben.lee@example.net>',
        "Subject: Upcoming Repayment Reminder",
        "Date: Mon, 23 Nov 2026 12:00:00 +1100",
        f"Message-ID: {MSG_ID}",
    ]
    assert [line.split(":")[0] for line in head[5:7]] == ["MIME-Version", "Content-Type"]
    message = email.message_from_bytes(raw, policy=default)
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert (text["Content-Transfer-Encoding"], html["Content-Transfer-Encoding"]) == (
        "quoted-printable",
        "quoted-printable",
    )
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert text.get_content().splitlines() == ["Héllo"]
    assert html.get_content().splitlines() == ["<p>Héllo</p>"]
    assert raw.isascii()


def test_body_text_that_looks_like_a_boundary_stays_inside_its_part() -> None:
    # Given text that copies the shape of the message's own boundary lines
    forged = "--=_0123\n--=_0123--\nContent-Type: text/html\n\n<b>x</b>"

    # When it is built into a message
    raw = mailer.to_mime(notice(text=forged), SENDER, date=AT)

    # Then the message still has exactly two parts and the text reads back unchanged
    text, html = email.message_from_bytes(raw, policy=default).iter_parts()
    assert text.get_content().splitlines() == forged.splitlines()
    assert html.get_content_type() == "text/html"


def test_each_line_of_a_part_is_its_own_crlf_line_ending_with_exactly_one_break() -> None:
    # Given text of two lines, ending with a line break, and HTML without one
    email = Email(to=BEN, subject="Hi", text="Line one\nLine two\n", html="<p>x</p>")

    # When it is built into a message
    raw = mailer.to_mime(email, SENDER, date=AT)

    # Then each line is a line of the encoded part (line breaks are not encoded as =0D=0A)
    # and each part's content ends with one line break, not two
    text, html = email_parts(raw)
    assert b"\r\n\r\nLine one\r\nLine two\r\n\r\n--" in raw
    assert text.get_content() == "Line one\r\nLine two\r\n"
    assert html.get_content() == "<p>x</p>\r\n"


def test_a_long_unbroken_line_is_soft_broken_with_crlf() -> None:
    # Given a single line far longer than quoted-printable's 76 characters, with no break
    line = "é" + "x" * 300

    # When it is built into a message
    raw = mailer.to_mime(notice(text=line), SENDER, date=AT)

    # Then every line ends CRLF, none is longer than 76 in the body, and it reads back whole
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"\n" not in body.replace(b"\r\n", b"")
    assert max(len(part) for part in body.split(b"\r\n")) <= 76
    text, _ = email.message_from_bytes(raw, policy=default).iter_parts()
    assert text.get_content().splitlines() == [line]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"From: a\r\n\xe9", "message is not 7-bit clean"),
        (b"From: a\r\nbare\nLF", "message has a bare CR or LF"),
        (b"From: a\r\nbare\rCR", "message has a bare CR or LF"),
        (b"From: a\r\n" + b"x" * 999, "message has a line longer than 998 characters"),
    ],
    ids=["8-bit", "bare-lf", "bare-cr", "long-line"],
)
def test_a_raw_message_that_is_not_clean_is_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(MessageBuildError) as raised:
        mailer.verify(raw, [("From", "a")], "ben.lee@example.net")
    assert raised.value.reason == problem


def test_a_line_of_exactly_998_characters_is_accepted_by_the_line_check() -> None:
    raw = mailer.to_mime(notice(), SENDER, date=AT, msg_id=MSG_ID)
    head, body = raw.split(b"\r\n\r\n", 1)
    headers = mailer.header_block(notice(), SENDER, date=AT, msg_id=MSG_ID)
    padded = head + b"\r\nX-Pad: " + b"x" * 991 + b"\r\n\r\n" + body
    assert max(len(line) for line in padded.split(b"\r\n")) == 998
    with pytest.raises(MessageBuildError) as raised:
        mailer.verify(padded, headers, "ben.lee@example.net")
    assert raised.value.reason == "header block does not have exactly the headers set"


def test_a_header_that_reads_back_differently_is_refused() -> None:
    headers = mailer.header_block(notice(), SENDER, date=AT, msg_id=MSG_ID)
    raw = mailer.to_mime(notice(), SENDER, date=AT, msg_id=MSG_ID).replace(
        b"Subject: Upcoming", b"Subject: Upcomin!"
    )
    with pytest.raises(MessageBuildError) as raised:
        mailer.verify(raw, headers, "ben.lee@example.net")
    assert raised.value.reason == "Subject header does not read back as written"


def test_a_to_header_for_anyone_else_is_refused() -> None:
    headers = mailer.header_block(notice(), SENDER, date=AT, msg_id=MSG_ID)
    raw = mailer.to_mime(notice(), SENDER, date=AT, msg_id=MSG_ID)
    with pytest.raises(MessageBuildError) as raised:
        mailer.verify(raw, headers, "mia.chen@example.net")
    assert raised.value.reason == "To header does not hold exactly the intended recipient"


def test_a_to_header_the_parsers_read_differently_is_refused() -> None:
    # Given a To header written with two trailing commas: the email package's older parser
    # reads a second, empty address there, its default policy does not
    headers = mailer.header_block(notice(), SENDER, date=AT, msg_id=MSG_ID)
    to = dict(headers)["To"]
    forged = [(name, f"{value},," if name == "To" else value) for name, value in headers]
    raw = mailer.to_mime(notice(), SENDER, date=AT, msg_id=MSG_ID).replace(
        f"To: {to}\r\n".encode(), f"To: {to},,\r\n".encode()
    )

    # When it is verified, then it is refused: both readings must name only the recipient
    with pytest.raises(MessageBuildError) as raised:
        mailer.verify(raw, forged, "ben.lee@example.net")
    assert raised.value.reason == "To header does not hold exactly the intended recipient"


# --- the send request ----------------------------------------------------------------------


class Recording:
    """An SES client stand-in at the boundary: records requests, answers or raises."""

    def __init__(self, answer: Any = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer = answer

    def send_email(self, **request: Any) -> dict[str, Any]:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        return {"MessageId": 1234}


def test_a_send_with_a_configuration_set_names_it_and_tags_the_token() -> None:
    client = Recording()
    sender = Mailer(SENDER, REGION, client=client, configuration_set="reminders")  # type: ignore[arg-type]

    assert sender.send(notice(), "tok-1", date=AT) == "1234"

    [request] = client.requests
    assert request["FromEmailAddress"] == SENDER
    assert request["ConfigurationSetName"] == "reminders"
    assert request["EmailTags"] == [{"Name": "send_token", "Value": "tok-1"}]
    data = request["Content"]["Raw"]["Data"]
    assert data.startswith(f"From: {SENDER}\r\nTo: ".encode())


def test_a_lender_gives_the_from_line_its_name_and_a_reply_to() -> None:
    raw = mailer.to_mime(notice(), SENDER, date=AT, lender=LENDER, msg_id=MSG_ID)

    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    assert head[:6] == [
        f'From: "Example Home Loans" <{SENDER}>',
        'To: "Ben Lee" <ben.lee@example.net>',
        'Reply-To: "Example Home Loans" <loans@lender.example.com.au>',
        "Subject: Upcoming Repayment Reminder",
        "Date: Mon, 23 Nov 2026 12:00:00 +1100",
        f"Message-ID: {MSG_ID}",
    ]


def test_a_lender_name_from_configuration_is_encoded_by_our_own_code() -> None:
    # Given a lender name with accents, a line break and a header of its own
    odd = replace(LENDER, name="Prêts Zoë\r\nBcc: evil@x.example")

    # When a message is built
    raw = mailer.to_mime(notice(), SENDER, date=AT, lender=odd, msg_id=MSG_ID)

    # Then the name is one line of our encoded words, and no header was added
    message = email.message_from_bytes(raw, policy=default)
    assert raw.isascii()
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Prêts Zoë Bcc: evil@x.example", SENDER)
    assert message["Reply-To"].addresses[0].addr_spec == "loans@lender.example.com.au"
    assert message["Bcc"] is None
    assert raw.startswith(b"From: =?utf-8?b?")


def test_every_message_gets_its_own_message_id_on_the_senders_domain() -> None:
    ids = {
        str(email.message_from_bytes(mailer.to_mime(notice(), SENDER, date=AT))["Message-ID"])
        for _ in range(3)
    }

    assert len(ids) == 3
    assert all(re.fullmatch(r"<[0-9a-f]{32}@lender\.example\.com\.au>", i) for i in ids)


def test_a_body_that_cannot_be_built_is_a_build_error_naming_why() -> None:
    # Given an email whose composer left out its text part (a bug in a check)
    broken = replace(notice(), text=None)  # type: ignore[arg-type]

    # When it is built, then it is refused, saying why, and never sent
    with pytest.raises(MessageBuildError) as raised:
        mailer.to_mime(broken, SENDER, date=AT)
    assert raised.value.reason == "message body cannot be built: TypeError"


class Account:
    """An SESv2 client whose ``GetAccount`` answers ``answer``."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def get_account(self) -> dict[str, Any]:
        return self.answer


def test_a_quota_ses_leaves_out_reads_as_no_rate_and_no_24_hour_cap() -> None:
    # Given GetAccount answers with an empty quota
    mailer_ = Mailer(SENDER, REGION, client=Account({"SendQuota": {}}))  # type: ignore[arg-type]

    # Then the rate is 0 (unknown: the run sends at the fallback rate) and the cap -1
    assert mailer_.send_quota() == SendQuota(
        max_send_rate=0.0, max_24_hour_send=-1.0, sent_last_24_hours=0.0, sending_enabled=True
    )


def test_a_message_date_without_a_time_zone_is_refused() -> None:
    with pytest.raises(MessageBuildError, match=r"^the message's date has no time zone$"):
        mailer.to_mime(notice(), SENDER, date=AT.replace(tzinfo=None))


def test_a_send_without_a_token_or_configuration_set_carries_neither() -> None:
    client = Recording()
    Mailer(SENDER, REGION, client=client, configuration_set="reminders").send(notice(), date=AT)  # type: ignore[arg-type]
    Mailer(SENDER, REGION, client=client).send(notice(), "tok-1", date=AT)  # type: ignore[arg-type]

    first, second = client.requests
    assert first["ConfigurationSetName"] == "reminders"
    assert "EmailTags" not in first
    assert "ConfigurationSetName" not in second
    assert "EmailTags" not in second


def client_error(code: str | None, status: int | None, message: str | None = "no") -> ClientError:
    response: dict[str, Any] = {"ResponseMetadata": {}}
    if code is not None or message is not None:
        response["Error"] = {}
        if code is not None:
            response["Error"]["Code"] = code
        if message is not None:
            response["Error"]["Message"] = message
    if status is not None:
        response["ResponseMetadata"]["HTTPStatusCode"] = status
    return ClientError(response, "SendEmail")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (client_error("MessageRejected", 400), PermanentSendError, "MessageRejected: no"),
        (client_error("BadRequestException", 400), PermanentSendError, "BadRequestException: no"),
        (
            client_error("InvalidParameterValue", 400),
            PermanentSendError,
            "InvalidParameterValue: no",
        ),
        (client_error("MessageRejected", 500), PermanentSendError, "MessageRejected: no"),
        (client_error("InternalFailure", 500), AmbiguousSendError, "InternalFailure: no"),
        (client_error("ServiceUnavailable", 503), AmbiguousSendError, "ServiceUnavailable: no"),
        (client_error("Throttling", 499), ThrottledSendError, "Throttling: no"),
        (client_error("Throttling", None), ThrottledSendError, "Throttling: no"),
        (
            client_error("TooManyRequestsException", 429),
            ThrottledSendError,
            "TooManyRequestsException: no",
        ),
        (client_error("ThrottlingException", 400), ThrottledSendError, "ThrottlingException: no"),
        (
            client_error("Other", 400, "Maximum sending rate exceeded."),
            ThrottledSendError,
            "Other: Maximum sending rate exceeded.",
        ),
        (client_error(None, 502, "gateway"), AmbiguousSendError, "Unknown: gateway"),
        (client_error(None, 400, None), TransientSendError, "Unknown:"),
        (client_error("Paused", 400, None), TransientSendError, "Paused:"),
        (
            ClientError({"Error": {"Code": "X", "Message": "m"}}, "SendEmail"),
            TransientSendError,
            "X: m",
        ),
    ],
    ids=[
        "rejected",
        "bad-request",
        "invalid-parameter",
        "rejected-5xx",
        "500",
        "503",
        "499",
        "no-status",
        "too-many-requests",
        "throttling-exception",
        "rate-exceeded-message",
        "no-code",
        "no-error",
        "no-message",
        "no-metadata",
    ],
)
def test_ses_errors_are_classified_by_code_then_status(
    error: ClientError, kind: type[Exception], reason: str
) -> None:
    classified = mailer.classify_client_error(error)
    assert type(classified) is kind
    assert classified.reason == reason
    assert str(classified) == reason


@pytest.mark.parametrize(
    ("raised", "kind"),
    [
        (ConnectTimeoutError(endpoint_url="https://email"), TransientSendError),
        (ReadTimeoutError(endpoint_url="https://email"), AmbiguousSendError),
        (client_error("MessageRejected", 400), PermanentSendError),
    ],
    ids=["connect-timeout", "read-timeout", "client-error"],
)
def test_a_failed_send_raises_what_the_failure_means(
    raised: Exception, kind: type[mailer.SendError]
) -> None:
    sender = Mailer(SENDER, REGION, client=Recording(raised))  # type: ignore[arg-type]
    with pytest.raises(kind) as caught:
        sender.send(notice(), date=AT)
    assert caught.value.__cause__ is raised
    assert isinstance(caught.value, mailer.SendError)
    if not isinstance(raised, ClientError):
        assert caught.value.reason == f"{type(raised).__name__}: {raised}"


def test_the_default_client_is_created_lazily_once_per_region(aws: None) -> None:
    mailer._default_clients.pop(REGION, None)
    try:
        sender = Mailer(SENDER, REGION)
        assert REGION not in mailer._default_clients
        assert sender.client is mailer.ses_client(REGION)
        assert sender.client is sender.client
    finally:
        mailer._default_clients.pop(REGION, None)


def test_ses_error_helper_matches_what_the_mailer_reads() -> None:
    _, parsed = ses_error("MessageRejected", 400)
    # botocore-stubs want its private TypedDict; ses_error builds that shape as a plain dict.
    error = ClientError(parsed, "SendEmail")  # type: ignore[arg-type]
    assert mailer.classify_client_error(error).reason == ("MessageRejected: injected")


def test_a_send_waits_for_its_pace_once_the_message_is_built_just_before_the_request() -> None:
    # Given a pace that notes how many requests SES had when it was waited on
    client = Recording()
    waited: list[int] = []

    # When a message is sent, and one that cannot be built (SES cannot take the address)
    Mailer(SENDER, REGION, client=client).send(  # type: ignore[arg-type]
        notice(), date=AT, pace=lambda: waited.append(len(client.requests))
    )
    zoe = Recipient("bor-9", "Zoë", "zoë@example.com")
    with pytest.raises(PermanentSendError):
        Mailer(SENDER, REGION, client=client).send(  # type: ignore[arg-type]
            notice(to=zoe), date=AT, pace=lambda: waited.append(len(client.requests))
        )

    # Then the first waited once, right before its request; the second never took a slot
    assert waited == [0]
    assert len(client.requests) == 1
