"""Fan-out: a run with more due notices than fit its time hands the rest to an SQS queue.

Producer (inside a scheduled run, :meth:`FanOut.split`): when the pending notices
outnumber what the run's remaining Lambda time can send at ``FANOUT_SEND_RATE``, the
run keeps what fits and renders each other notice's email now (its ``compose``
closure cannot travel), then sends them in messages of up to
:data:`NOTICES_PER_MESSAGE` notices, 10 messages per ``SendMessageBatch``. A message
carries the check, the producer's business date and run id, when it was enqueued,
and per notice its kind, recipient, ledger parts (key, item id) and rendered email.

Consumer (the ``deliver_fanout`` function, :func:`handle_batch`): each record is
decoded, its notices rebuilt with a ``compose`` that returns the stored email, and
delivered with :func:`chalicelib.delivery.deliver` under the producer's business
date, so the ledger's conditional claim stops a redelivered message from sending
twice, and an ambiguous send stays ``unknown`` as in any run. The handler returns
SQS's partial batch response: a record whose notices were released after a
transient failure, or left for lack of time, is listed so SQS redelivers it; an
undecodable (poison) record is listed and reported with its message id and reason,
and reaches the queue's dead-letter queue after ``maxReceiveCount`` receives. A
message older than ``FANOUT_MAX_AGE_MINUTES`` is dropped (reported, not failed): the
next scheduled run collects whatever is still due, with fresh data (a repayment paid
meanwhile is no longer due there).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import clients, ledger, models, registry
from chalicelib import observability as metric
from chalicelib.config import ConfigError, Lender, Settings
from chalicelib.delivery import LEDGER_ERRORS, Notice, deliver
from chalicelib.formatting import valid_email
from chalicelib.limits import EMAIL_CHARS, key_problem
from chalicelib.mailer import Email, Mailer, Recipient
from chalicelib.models import Notification
from chalicelib.observability import logger, publish_counts
from chalicelib.run import Part, Run, RunSummary

if TYPE_CHECKING:  # the stubs are a dev dependency; Lambda never imports them
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

# The ledger status a run reports for a notice it handed to the queue.
ENQUEUED = "enqueued"
# EMF metrics (namespace LoanReminders, dimensions check and service): notices a run
# handed to the queue, and messages the consumer dropped as too old.
NOTICES_ENQUEUED = "NoticesEnqueued"
MESSAGES_EXPIRED = "FanoutMessagesExpired"
# Message format version: a consumer refuses (as poison) a message of another version.
VERSION = 1
NOTICES_PER_MESSAGE = 10
# SQS's limit, for one message and for the sum of one SendMessageBatch's messages.
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_BATCH_ENTRIES = 10
# Concurrent consumers at most (the event source mapping's MaximumConcurrency). Each
# sends one notice at a time; at the measured ~100 ms a notice (ops/bench_fanout.py,
# 50 ms of it SES) 25 reach a 200/s SES quota with some room. Lower it for a smaller
# quota: throttled sends are released and their records redelivered, costing time.
MAX_CONCURRENCY = 25
# The queue app.py names when FANOUT_QUEUE_NAME is unset (the Lambda runtime, the tests);
# `make deploy` and `make package` set it to the stage's queue, and the template also
# points the event source at the stage's queue's ARN.
QUEUE_PLACEHOLDER = "loan-reminders-fanout"
# One consumer's share of the SES quota (FANOUT_CONSUMER_RATE, set by the template):
# MAX_CONCURRENCY consumers at 8 messages a second stay within a 200/s quota.
CONSUMER_RATE = 8.0
# SQS records per consumer invocation (the event source mapping's BatchSize).
BATCH_SIZE = 10
# A message older than this (FANOUT_MAX_AGE_MINUTES) is dropped: by then the next hourly
# run has collected, from fresh data, whatever is still due.
MAX_AGE_MINUTES = 60


@dataclass(frozen=True)
class FanOutSettings:
    """Where and when a scheduled run fans out (from the environment)."""

    queue_url: str
    # Notices a run sends per second: what its remaining time is worth.
    send_rate: float = 10.0
    # A message older than this is dropped by the consumer: the next run collects it.
    max_age_minutes: int = MAX_AGE_MINUTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FanOutSettings | None:
        """``FANOUT_QUEUE_URL`` (unset: None), ``FANOUT_SEND_RATE``, ``FANOUT_MAX_AGE_MINUTES``."""
        env = os.environ if environ is None else environ
        url = env.get("FANOUT_QUEUE_URL", "").strip()
        if not url:
            return None
        defaults = cls(queue_url=url)
        rate = _number(env, "FANOUT_SEND_RATE", defaults.send_rate)
        age = _number(env, "FANOUT_MAX_AGE_MINUTES", defaults.max_age_minutes)
        if rate <= 0 or age <= 0 or age != int(age):
            raise ConfigError(
                "FANOUT_SEND_RATE must be positive and FANOUT_MAX_AGE_MINUTES a positive "
                f"whole number, got {rate!r} and {age!r}"
            )
        return cls(queue_url=url, send_rate=rate, max_age_minutes=int(age))


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def queue_name(environ: Mapping[str, str] | None = None) -> str:
    """The queue the consumer's event source reads, as Chalice deploys or packages it."""
    env = os.environ if environ is None else environ
    return env.get("FANOUT_QUEUE_NAME", "").strip() or QUEUE_PLACEHOLDER


_sqs_clients: dict[str, SQSClient] = {}


def sqs_client(region: str) -> SQSClient:
    """The SQS client for ``region``, made once per container from the shared session."""
    if region not in _sqs_clients:
        _sqs_clients[region] = cast(
            "SQSClient",
            clients.session().create_client(
                "sqs", region_name=region, config=Config(connect_timeout=5, read_timeout=15)
            ),
        )
    return _sqs_clients[region]


@dataclass(frozen=True)
class FanOut:
    """A scheduled run's way out when its notices do not fit its time."""

    settings: FanOutSettings
    client: SQSClient

    @classmethod
    def configured(cls, region: str, environ: Mapping[str, str] | None = None) -> FanOut | None:
        """The fan-out of this environment's queue, or None when none is configured."""
        settings = FanOutSettings.from_env(environ)
        if settings is None:
            return None
        return cls(settings, sqs_client(region))

    def capacity(self, run: Run, account_rate: float) -> int | None:
        """How many notices the run can still send itself; None when its time is unbounded.

        It sends at the account's rate (``account_rate``, read from SES), but one process
        sends no faster than ``FANOUT_SEND_RATE`` whatever the quota.
        """
        if run.remaining_ms is None:
            return None
        margin_ms = run.settings.reliability.time_margin_seconds * 1000
        seconds = max(0, run.remaining_ms() - margin_ms) / 1000
        return int(seconds * min(self.settings.send_rate, account_rate))

    def split(
        self,
        run: Run,
        notices: Sequence[Notice[Any]],
        existing: Mapping[str, Notification],
        outcome: dict[str, str],
        account_rate: Callable[[], float],
    ) -> Sequence[Notice[Any]]:
        """The notices the run sends itself; the pending ones beyond its capacity are enqueued.

        Notices with nothing pending (sent, held by another run) stay: skipping them
        costs no send. Enqueued parts get :data:`ENQUEUED` in ``outcome`` and are
        counted in ``summary.enqueued``; a notice the queue did not take stays with
        the run (its time budget then defers it, due for the next run).
        ``account_rate`` reads the run's send rate from SES: only when something is pending.
        """
        if run.remaining_ms is None or run.dry_run:
            return notices
        pending = [n for n in notices if _pending(run, n, existing)]
        capacity = self.capacity(run, account_rate()) if pending else None
        if capacity is None or len(pending) <= capacity:
            return notices
        overflow = pending[capacity:]
        taken = enqueue(run, overflow, self, groups=groups(notices))
        for notice in taken:
            run.summary.notices_due += len(notice.parts)
            run.summary.enqueued += len(notice.parts)
            outcome.update({part.key: ENQUEUED for part in notice.parts})
        gone = {id(notice) for notice in taken}
        publish_counts(run.summary.check, {NOTICES_ENQUEUED: run.summary.enqueued})
        logger.info(
            "notices handed to the fan-out queue",
            extra={
                "check": run.summary.check,
                "capacity": capacity,
                "pending": len(pending),
                "enqueued": len(taken),
            },
        )
        return [notice for notice in notices if id(notice) not in gone]


def _pending(run: Run, notice: Notice[Any], existing: Mapping[str, Notification]) -> bool:
    return any(
        ledger.state(existing.get(part.key), run.now, run.settle) == ledger.PENDING
        for part in notice.parts
    )


# --- the message -----------------------------------------------------------------------


def groups(notices: Sequence[Notice[Any]]) -> dict[tuple[str, str], list[str]]:
    """The ledger keys of the run's one-part notices, by kind and item.

    A repayment's flag is set once every notice of its tier (one per recipient) is
    sent: the consumer needs the keys of the notices the run kept too.
    """
    found: dict[tuple[str, str], list[str]] = {}
    for notice in notices:
        if len(notice.parts) == 1:
            part = notice.parts[0]
            found.setdefault((notice.kind, part.item_id), []).append(part.key)
    return found


def encode_notice(
    notice: Notice[Any], groups: Mapping[tuple[str, str], list[str]] | None = None
) -> dict[str, Any]:
    """One notice as a message carries it, its email rendered now.

    A one-part notice also carries ``group``: the keys of every notice of its kind
    and item in the run (:func:`groups`), its own included.
    """
    email = notice.compose(notice.parts)
    recipient = {
        "id": notice.recipient.id,
        "name": notice.recipient.name,
        "email": notice.recipient.email,
    }
    if notice.recipient.first_name:
        recipient["first_name"] = notice.recipient.first_name
    encoded = {
        "kind": notice.kind,
        "recipient": recipient,
        "parts": [{"key": part.key, "item_id": part.item_id} for part in notice.parts],
        "email": {"subject": email.subject, "text": email.text, "html": email.html},
    }
    if groups is not None and len(notice.parts) == 1:
        part = notice.parts[0]
        encoded["group"] = groups.get((notice.kind, part.item_id), [part.key])
    return encoded


def _body(run: Run, notices: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "v": VERSION,
            "check": run.summary.check,
            "business_date": run.today.isoformat(),
            "run_id": run.run_id,
            "enqueued_at": run.now.isoformat(),
            "notices": notices,
        },
        separators=(",", ":"),
    )


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def messages(
    run: Run,
    notices: Sequence[Notice[Any]],
    groups: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[tuple[str, list[Notice[Any]]]]:
    """The message bodies for ``notices``, each with the notices it carries.

    Up to :data:`NOTICES_PER_MESSAGE` per message and never over SQS's payload limit;
    a notice too big for a message on its own is left out (it stays with the run).
    """
    made: list[tuple[str, list[Notice[Any]]]] = []
    encoded: list[dict[str, Any]] = []
    carried: list[Notice[Any]] = []
    for notice in notices:
        one = encode_notice(notice, groups)
        if _size(_body(run, [one])) > MAX_PAYLOAD_BYTES:
            logger.warning(
                "notice too big for a fan-out message; left to the run",
                extra={"check": run.summary.check, "keys": [p.key for p in notice.parts]},
            )
            continue
        if encoded and (
            len(encoded) == NOTICES_PER_MESSAGE
            or _size(_body(run, [*encoded, one])) > MAX_PAYLOAD_BYTES
        ):
            made.append((_body(run, encoded), carried))
            encoded, carried = [], []
        encoded.append(one)
        carried.append(notice)
    if encoded:
        made.append((_body(run, encoded), carried))
    return made


def _calls(
    bodies: list[tuple[str, list[Notice[Any]]]],
) -> Iterable[list[tuple[str, list[Notice[Any]]]]]:
    """Messages grouped into SendMessageBatch calls: 10 entries, 256 KiB in all, at most."""
    call: list[tuple[str, list[Notice[Any]]]] = []
    size = 0
    for body, carried in bodies:
        if call and (len(call) == MAX_BATCH_ENTRIES or size + _size(body) > MAX_PAYLOAD_BYTES):
            yield call
            call, size = [], 0
        call.append((body, carried))
        size += _size(body)
    if call:
        yield call


def enqueue(
    run: Run,
    notices: Sequence[Notice[Any]],
    fan_out: FanOut,
    *,
    groups: Mapping[tuple[str, str], list[str]] | None = None,
) -> list[Notice[Any]]:
    """Send ``notices`` to the queue; return those the queue took.

    A call that fails, or an entry SQS refuses, leaves its notices with the run. A
    lost answer that botocore retries may enqueue a message twice: the consumer's
    ledger claim makes the copy send nothing.
    """
    taken: list[Notice[Any]] = []
    for call in _calls(messages(run, notices, groups)):
        entries: list[SendMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "MessageBody": body} for i, (body, _) in enumerate(call)
        ]
        try:
            response = fan_out.client.send_message_batch(
                QueueUrl=fan_out.settings.queue_url, Entries=entries
            )
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "fan-out messages not sent; left to the run",
                extra={"check": run.summary.check, "error": f"{type(exc).__name__}: {exc}"},
            )
            continue
        refused = {entry["Id"]: entry.get("Code", "") for entry in response.get("Failed", [])}
        for i, (_, carried) in enumerate(call):
            if str(i) in refused:
                logger.warning(
                    "fan-out message refused by SQS; left to the run",
                    extra={"check": run.summary.check, "error": refused[str(i)]},
                )
            else:
                taken.extend(carried)
    return taken


# --- the consumer ----------------------------------------------------------------------


class PoisonMessage(ValueError):
    """A record that can never be delivered (not our message, or malformed)."""


@dataclass(frozen=True)
class Batch:
    """A decoded message: the producer's run and the notices it handed over."""

    check: str
    business_date: date
    run_id: str
    enqueued_at: datetime
    notices: list[Notice[None]]
    # A one-part notice's key -> the keys of every notice of its kind and item in the run.
    groups: dict[str, list[str]] = field(default_factory=dict)


def decode(body: str) -> Batch:
    """Rebuild a message's notices; :class:`PoisonMessage` saying why it cannot be."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise PoisonMessage(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PoisonMessage("body is not a JSON object")
    if data.get("v") != VERSION:
        raise PoisonMessage(f"unknown message version {data.get('v')!r}")
    check = _text(data, "check")
    if check not in registry.NAMES:
        raise PoisonMessage(f"unknown check {check!r}")
    try:
        business_date = date.fromisoformat(_text(data, "business_date"))
        enqueued_at = datetime.fromisoformat(_text(data, "enqueued_at"))
    except ValueError as exc:
        raise PoisonMessage(f"bad date: {exc}") from None
    if enqueued_at.tzinfo is None:
        raise PoisonMessage("enqueued_at has no time zone")
    raw = data.get("notices")
    if not isinstance(raw, list) or not raw:
        raise PoisonMessage("no notices")
    notices = [_notice(check, item) for item in raw]
    return Batch(
        check=check,
        business_date=business_date,
        run_id=_text(data, "run_id"),
        enqueued_at=enqueued_at,
        notices=notices,
        groups={
            notice.parts[0].key: _group(check, item, notice)
            for item, notice in zip(raw, notices, strict=True)
            if "group" in item
        },
    )


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name) if isinstance(data, Mapping) else None
    if not isinstance(value, str) or not value:
        raise PoisonMessage(f"{name} is missing or not a string")
    return value


def _notice(check: str, item: Any) -> Notice[None]:
    if not isinstance(item, dict):
        raise PoisonMessage("a notice is not a JSON object")
    kind = _text(item, "kind")
    try:
        declared = registry.kind(kind)
    except ValueError:
        raise PoisonMessage(f"unknown kind {kind!r}") from None
    if declared.check != check:
        raise PoisonMessage(f"kind {kind!r} is not of check {check!r}")
    person = item.get("recipient")
    if not isinstance(person, dict):
        raise PoisonMessage("recipient is missing")
    first_name = person.get("first_name")
    recipient = Recipient(
        id=_text(person, "id"),
        name=_text(person, "name"),
        email=_text(person, "email"),
        first_name=first_name if isinstance(first_name, str) and first_name else None,
    )
    if not valid_email(recipient.email) or len(recipient.email) > EMAIL_CHARS:
        raise PoisonMessage("recipient has no valid email address")
    raw_parts = item.get("parts")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise PoisonMessage("a notice has no parts")
    parts = [_part(check, raw) for raw in raw_parts]
    mail = item.get("email")
    if not isinstance(mail, dict):
        raise PoisonMessage("email is missing")
    email = Email(
        to=recipient,
        subject=_text(mail, "subject"),
        text=_text(mail, "text"),
        html=_text(mail, "html"),
    )
    return Notice(kind=kind, recipient=recipient, parts=parts, compose=_stored(email))


def _group(check: str, item: Mapping[str, Any], notice: Notice[None]) -> list[str]:
    keys = item["group"]
    if (
        not isinstance(keys, list)
        or len(notice.parts) != 1
        or notice.parts[0].key not in keys
        or not all(isinstance(k, str) and k.startswith(check + "#") for k in keys)
    ):
        raise PoisonMessage("group is not a list of the check's keys with the notice's own")
    return keys


def _part(check: str, raw: Any) -> Part[None]:
    if not isinstance(raw, dict):
        raise PoisonMessage("a part is not a JSON object")
    key, item_id = _text(raw, "key"), _text(raw, "item_id")
    # Only ledger keys of the message's own check: a message cannot write any other entry.
    if not key.startswith(ledger.notice_key(check) + "#"):
        raise PoisonMessage(f"ledger key {key[:100]!r} is not of check {check!r}")
    problem = key_problem("ledger key", key) or key_problem("item id", item_id)
    if problem is not None:
        raise PoisonMessage(problem)
    return Part(key=key, item_id=item_id, data=None)


class PacedMailer(Mailer):
    """A mailer that sends at most ``rate`` messages a second: one consumer's quota share.

    Consumers run concurrently (up to :data:`MAX_CONCURRENCY`), each unaware of the
    others; pacing each to ``quota / MAX_CONCURRENCY`` keeps them together under the
    quota, so SES never throttles them (a throttled send would cost a redelivery).
    """

    def __init__(
        self,
        sender: str,
        region: str,
        *,
        rate: float,
        client: SESV2Client | None = None,
        configuration_set: str | None = None,
        lender: Lender | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            sender, region, client=client, configuration_set=configuration_set, lender=lender
        )
        self._interval = 1 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def send(
        self,
        email: Email,
        token: str | None = None,
        *,
        date: datetime,
        pace: Callable[[], object] | None = None,
    ) -> str:
        """Send as :meth:`Mailer.send` does, waiting for this consumer's next slot (then
        the run's ``pace``) once the message is built."""

        def paced() -> None:
            self._wait_for_slot()
            if pace is not None:
                pace()

        return super().send(email, token, date=date, pace=paced)

    def _wait_for_slot(self) -> None:
        # A run's workers send from several threads: each takes its own slot.
        with self._lock:
            now = self._clock()
            slot = now if self._next is None else max(now, self._next)
            self._next = slot + self._interval
        if slot > now:
            self._sleep(slot - now)


def consumer_mailer(settings: Settings, environ: Mapping[str, str] | None = None) -> Mailer:
    """The consumer's mailer: paced at ``FANOUT_CONSUMER_RATE`` when it is set."""
    env = os.environ if environ is None else environ
    rate = _number(env, "FANOUT_CONSUMER_RATE", 0.0)
    if rate < 0:
        raise ConfigError(f"FANOUT_CONSUMER_RATE must not be negative, got {rate!r}")
    if rate == 0:
        return Mailer(
            settings.sender_email,
            settings.region,
            configuration_set=settings.ses_configuration_set,
            lender=settings.lender,
        )
    return PacedMailer(
        settings.sender_email,
        settings.region,
        rate=rate,
        configuration_set=settings.ses_configuration_set,
        lender=settings.lender,
    )


def _stored(email: Email) -> Callable[[Sequence[Part[None]]], Email]:
    def compose(parts: Sequence[Part[None]]) -> Email:
        return email

    return compose


@dataclass
class Consumed:
    """What one consumer invocation did with its records."""

    failures: list[str] = field(default_factory=list)
    summaries: list[RunSummary] = field(default_factory=list)
    poison: list[dict[str, str]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    expired_by_check: dict[str, int] = field(default_factory=dict)

    def publish(self) -> None:
        """One EMF document per check: what its notices came to, and messages dropped as old.

        The same metrics as a scheduled run's, so its alarms (NoticesFailed) cover these.
        """
        checks = {s.check for s in self.summaries} | set(self.expired_by_check)
        for check in sorted(checks):
            mine = [s for s in self.summaries if s.check == check]
            publish_counts(
                check,
                {
                    metric.NOTICES_SENT: sum(s.sent for s in mine),
                    metric.NOTICES_FAILED: sum(s.failed for s in mine),
                    metric.NOTICES_RETRYING: sum(s.retrying for s in mine),
                    metric.NOTICES_UNKNOWN: sum(s.unknown for s in mine),
                    metric.NOTICES_DEFERRED: sum(s.deferred for s in mine),
                    metric.NOTICES_SUPPRESSED: sum(s.suppressed for s in mine),
                    MESSAGES_EXPIRED: self.expired_by_check.get(check, 0),
                },
            )

    def response(self) -> dict[str, Any]:
        """SQS's partial batch response: the records to receive again."""
        return {"batchItemFailures": [{"itemIdentifier": i} for i in self.failures]}


def handle_batch(
    event: Mapping[str, Any],
    remaining_ms: Callable[[], int] | None = None,
    *,
    now: datetime | None = None,
    settings: Settings | None = None,
    mailer: Mailer | None = None,
    max_age: timedelta | None = None,
) -> Consumed:
    """Deliver the notices of an SQS event's records; see the module's docstring."""
    settings = settings or Settings.from_env()
    models.bind(settings)
    mailer = mailer or consumer_mailer(settings)
    if max_age is None:
        fan_out = FanOutSettings.from_env()
        max_age = timedelta(minutes=fan_out.max_age_minutes if fan_out else MAX_AGE_MINUTES)
    consumed = Consumed()
    for record in event.get("Records", []):
        message_id = str(record.get("messageId", ""))
        try:
            batch = decode(str(record.get("body", "")))
        except PoisonMessage as exc:
            consumed.poison.append({"message_id": message_id, "reason": str(exc)})
            consumed.failures.append(message_id)
            logger.error(
                "poison fan-out message", extra={"message_id": message_id, "reason": str(exc)}
            )
            continue
        clock = (now or datetime.now(UTC)).astimezone(UTC)
        if clock - batch.enqueued_at > max_age:
            consumed.expired.append(message_id)
            consumed.expired_by_check[batch.check] = (
                consumed.expired_by_check.get(batch.check, 0) + 1
            )
            logger.warning(
                "fan-out message too old; dropped, the next run collects what is still due",
                extra={
                    "message_id": message_id,
                    "check": batch.check,
                    "enqueued_at": batch.enqueued_at.isoformat(),
                    "notices": len(batch.notices),
                },
            )
            continue
        summary = _deliver(batch, settings, mailer, clock, remaining_ms)
        if summary is None or summary.retrying or summary.deferred:
            consumed.failures.append(message_id)
        if summary is not None:
            consumed.summaries.append(summary)
    return consumed


def _deliver(
    batch: Batch,
    settings: Settings,
    mailer: Mailer,
    now: datetime,
    remaining_ms: Callable[[], int] | None,
) -> RunSummary | None:
    """Deliver one message's notices as a run of the producer's business date.

    None when the ledger could not be read (nothing was claimed): the record is retried.
    """
    run_id = uuid.uuid4().hex
    summary = RunSummary(
        check=batch.check, business_date=batch.business_date.isoformat(), run_id=run_id
    )
    run = Run(
        settings=settings,
        mailer=mailer,
        run_id=run_id,
        now=now,
        today=batch.business_date,
        summary=summary,
        remaining_ms=remaining_ms,
    )
    try:
        outcome = deliver(run, batch.notices)
        if batch.check == registry.REPAYMENT_REMINDERS:
            _flag_repayments(run, batch, outcome)
    except LEDGER_ERRORS as exc:
        logger.warning(
            "fan-out message not delivered, left for redelivery",
            extra={"check": batch.check, "error": f"{type(exc).__name__}: {exc}"},
        )
        return None
    logger.info(
        "fan-out message delivered",
        extra={"producer_run": batch.run_id, "summary": summary.for_log()},
    )
    return summary


def _flag_repayments(run: Run, batch: Batch, outcome: dict[str, str]) -> None:
    """Set each repayment's ``*_sent`` flag once every notice of its tier is sent.

    What the repayment check does after its own deliveries, for the notices it handed
    on: the group's other keys (sent by the run or another message) are read back.
    """
    from chalicelib.checks import repayment_reminders as repayments

    flags = {tier.kind.name: tier for tier in repayments.TIERS}
    wanted = [
        # A digest (the BDM's escalations) has one part per repayment, its only recipient.
        (notice.kind, part, batch.groups[part.key] if len(notice.parts) == 1 else [part.key])
        for notice in batch.notices
        if notice.kind in flags
        for part in notice.parts
        if (len(notice.parts) > 1 or part.key in batch.groups)
        and outcome.get(part.key) == ledger.SENT
    ]
    found = ledger.lookup(key for _, _, group in wanted for key in group)
    for kind, part, group in wanted:
        if all(key in found and found[key].status == ledger.SENT for key in group):
            repayments.set_flag(run, models.Repayment(part.item_id), flags[kind].flag)


def handle(
    event: Mapping[str, Any], remaining_ms: Callable[[], int] | None = None
) -> dict[str, Any]:
    """Entry point of the ``deliver_fanout`` function: the partial batch response.

    Chalice's SQS handler returns what the function returns, so Lambda gets this dict.
    """
    consumed = handle_batch(event, remaining_ms)
    consumed.publish()
    return consumed.response()
