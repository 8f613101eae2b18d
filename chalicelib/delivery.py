"""What every check shares: the run, its summary, and claim-then-send delivery."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from chalicelib import ledger
from chalicelib.config import Settings
from chalicelib.formatting import valid_email
from chalicelib.limits import EMAIL_CHARS, fits_key, key_problem, quoted, shorten
from chalicelib.mailer import Email, Mailer, PermanentSendError, Recipient, TransientSendError
from chalicelib.models import CrmModel
from chalicelib.observability import logger, mask_addresses

_M = TypeVar("_M", bound=CrmModel)

# What the log shows of each email a dry run would send (no names, no subjects).
_LOGGED_WOULD_SEND = ("kind", "recipient_id", "recipient_email", "keys")
# How much of a reason an invalid-item report keeps (reasons quote the CRM's values).
REPORTED_REASON_CHARS = 300


class DeliveryIncomplete(RuntimeError):
    """Some due notices could not be sent this run; they stay due for the next one."""

    def __init__(self, summary: RunSummary) -> None:
        # Lambda logs this message: SES errors can name the recipient, so mask it.
        super().__init__(
            mask_addresses(
                f"{summary.check}: {summary.retrying} notice(s) not sent after transient "
                f"errors; they will be retried ({'; '.join(summary.errors[:5])})"
            )
        )
        self.summary = summary


@dataclass
class RunSummary:
    """What one run of one check did; logged as one structured line."""

    check: str
    business_date: str
    run_id: str
    acted: bool = True
    items_read: int = 0
    notices_due: int = 0
    sent: int = 0
    emails_sent: int = 0
    skipped: int = 0
    failed: int = 0
    retrying: int = 0
    invalid: int = 0
    invalid_items: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    would_send: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data."""
        return asdict(self)

    def for_log(self) -> dict[str, Any]:
        """The summary for the log: a dry run's list keeps ids and addresses only.

        Names and subjects (which quote note titles) stay in the returned summary
        for the operator and out of the logs; the logger masks the addresses.
        """
        data = self.as_dict()
        data["would_send"] = [
            {name: item[name] for name in _LOGGED_WOULD_SEND} for item in self.would_send
        ]
        return data


@dataclass
class Run:
    """One invocation of one check: its clock, business date, mailer and summary."""

    settings: Settings
    mailer: Mailer
    run_id: str
    now: datetime
    today: date
    summary: RunSummary
    dry_run: bool = False
    _reported: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def invalid(self, item_id: str, reason: str) -> None:
        """Skip a malformed CRM item: log it by id and reason and count it, once per run.

        The same problem of the same item (a borrower id listed twice, say) is
        reported once; ids and reasons are shortened so a huge id stays readable.
        """
        if (item_id, reason) in self._reported:
            return
        self._reported.add((item_id, reason))
        shown = {"item_id": shorten(item_id), "reason": shorten(reason, REPORTED_REASON_CHARS)}
        self.summary.invalid += 1
        self.summary.invalid_items.append(shown)
        logger.warning("skipped invalid item", extra={"check": self.summary.check, **shown})

    def fetch(self, model: type[_M], ids: Iterable[str | None]) -> dict[str, _M]:
        """Fetch items by id with BatchGetItem (PynamoDB pages it by 100).

        An id that cannot be a key (over DynamoDB's 2,048 bytes) names no item, so
        it is left out of the request, which it would otherwise fail, and reads as
        missing.
        """
        unique = sorted({i for i in ids if i and fits_key(i)})
        if not unique:
            return {}
        return {item.id: item for item in model.batch_get(unique)}

    def part(self, key: str, item_id: str, data: Any = None) -> Part | None:
        """A ledger part for ``item_id``, or ``None`` (reported) when its keys are too big.

        The part's key is the ledger's partition key and ``item_id`` the hash key of
        its ``item_id-index``: either over DynamoDB's limit would fail the run's
        requests, so the item is reported as invalid instead.
        """
        problem = key_problem("ledger key", key) or key_problem("item id", item_id)
        if problem is not None:
            self.invalid(item_id, problem)
            return None
        return Part(key=key, item_id=item_id, data=data)

    def recipient(self, person: Any, role: str, person_id: str) -> Recipient | str:
        """A Recipient for a staff member or borrower, or why one cannot be made."""
        if person is None:
            return f"{role} {quoted(person_id)} does not exist"
        if person.load_error:
            return f"{role} {quoted(person_id)}: {person.load_error}"
        if not valid_email(person.email) or len(person.email) > EMAIL_CHARS:
            return f"{role} {quoted(person_id)} has no valid email address"
        return Recipient(
            id=person.id,
            name=(person.name or "").strip() or person.email,
            email=person.email.strip(),
        )


@dataclass(frozen=True)
class Part:
    """One ledger entry of a notice: the CRM item it concerns and its data for the email."""

    key: str
    item_id: str
    data: Any = None


@dataclass(frozen=True)
class Notice:
    """One email to one recipient covering one or more parts (a digest covers several)."""

    kind: str
    recipient: Recipient
    parts: Sequence[Part]
    compose: Callable[[Sequence[Part]], Email]


def deliver(run: Run, notices: Sequence[Notice]) -> dict[str, str]:
    """Claim, send and record every notice; return each part's ledger status afterwards.

    Transient failures release their claims and are counted in ``retrying``; the
    caller raises :class:`DeliveryIncomplete` after every notice has been tried.

    In a dry run (``run.dry_run``) the ledger is only read: every notice this run
    would claim is rendered and listed in ``summary.would_send`` instead, and
    nothing is written or sent.
    """
    summary = run.summary
    existing = ledger.lookup(part.key for notice in notices for part in notice.parts)
    outcome: dict[str, str] = {}
    for notice in notices:
        claimed: list[Part] = []
        for part in notice.parts:
            summary.notices_due += 1
            entry = existing.get(part.key)
            current = ledger.state(entry, run.now)
            if run.dry_run:
                if current == ledger.PENDING:
                    claimed.append(part)
                else:
                    outcome[part.key] = current
                    summary.skipped += 1
            elif current == ledger.PENDING and ledger.claim(
                _claim(run, notice, part), run.run_id, run.now
            ):
                claimed.append(part)
            elif (
                current == ledger.ABANDONED and entry is not None and ledger.abandon(entry, run.now)
            ):
                outcome[part.key] = ledger.FAILED
                summary.failed += 1
                logger.error(
                    "notice abandoned by an interrupted run",
                    extra={"check": summary.check, "key": part.key, "run": entry.run_id},
                )
            else:
                outcome[part.key] = entry.status if entry is not None else ledger.CLAIMED
                summary.skipped += 1
        if claimed and run.dry_run:
            _preview(run, notice, claimed)
        elif claimed:
            outcome.update(_send(run, notice, claimed))
    return outcome


def _preview(run: Run, notice: Notice, parts: Sequence[Part]) -> None:
    """Render a notice a dry run would send and list it in the summary; send nothing.

    A notice that cannot be rendered (a template bug) stops the dry run with the
    error: there is no claim to release, and finding such bugs is what it is for.
    """
    email = notice.compose(parts)
    run.summary.would_send.append(
        {
            "kind": notice.kind,
            "recipient_id": notice.recipient.id,
            "recipient_name": notice.recipient.name,
            "recipient_email": notice.recipient.email,
            "subject": email.subject,
            "keys": [part.key for part in parts],
        }
    )


def _claim(run: Run, notice: Notice, part: Part) -> ledger.Claim:
    return ledger.Claim(
        key=part.key,
        kind=notice.kind,
        item_id=part.item_id,
        recipient_id=notice.recipient.id,
        recipient_email=notice.recipient.email,
        business_date=run.today.isoformat(),
    )


def _send(run: Run, notice: Notice, parts: Sequence[Part]) -> dict[str, str]:
    summary = run.summary
    subject = ""
    try:
        email = notice.compose(parts)
        subject = email.subject
        message_id = run.mailer.send(email)
    except PermanentSendError as exc:
        for part in parts:
            ledger.mark_failed(part.key, run.run_id, subject, exc.reason, run.now)
        summary.failed += len(parts)
        logger.error(
            "notice rejected permanently",
            extra={"check": summary.check, "keys": [p.key for p in parts], "reason": exc.reason},
        )
        return {part.key: ledger.FAILED for part in parts}
    # Anything else (a template bug, say) must not strand the claims or stop the
    # other notices: release, count as retrying, and the run raises at the end.
    except Exception as exc:
        reason = exc.reason if isinstance(exc, TransientSendError) else repr(exc)
        for part in parts:
            ledger.release(part.key, run.run_id, reason, run.now)
        summary.retrying += len(parts)
        summary.errors.append(reason)
        logger.warning(
            "notice not sent, will retry",
            extra={"check": summary.check, "keys": [p.key for p in parts], "reason": reason},
            exc_info=not isinstance(exc, TransientSendError),
        )
        return {part.key: ledger.PENDING for part in parts}
    for part in parts:
        ledger.mark_sent(part.key, run.run_id, subject, message_id, run.now)
    summary.sent += len(parts)
    summary.emails_sent += 1
    return {part.key: ledger.SENT for part in parts}
