"""Claim-then-send delivery of a run's notices (the run itself: :mod:`chalicelib.run`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib import ledger, suppression
from chalicelib.mailer import (
    AmbiguousSendError,
    Email,
    PermanentSendError,
    Recipient,
    TransientSendError,
)
from chalicelib.models import UNREADABLE, Notification
from chalicelib.observability import logger, mask_addresses
from chalicelib.run import Part, Run, RunSummary

# What each part of a notice carries for its email (Part.data), per check.
D = TypeVar("D")
# What a ledger write can fail with once botocore's own retries are spent.
LEDGER_ERRORS = (PynamoDBException, ClientError, BotoCoreError)


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


@dataclass(frozen=True)
class Notice(Generic[D]):
    """One email to one recipient covering one or more parts (a digest covers several).

    ``D`` is what each part carries for the email (``Part.data``); ``compose`` renders
    the email for the parts this run took.
    """

    kind: str
    recipient: Recipient
    parts: Sequence[Part[D]]
    compose: Callable[[Sequence[Part[D]]], Email]


def deliver(run: Run, notices: Sequence[Notice[D]]) -> dict[str, str]:
    """Claim, send and record every notice; return each part's ledger status afterwards.

    Transient failures release their claims and are counted in ``retrying``; the
    caller raises :class:`DeliveryIncomplete` after every notice has been tried.
    A run short of time stops claiming and leaves the rest due (``deferred``).

    In a dry run (``run.dry_run``) the ledger is only read: every notice this run
    would claim is rendered and listed in ``summary.would_send`` instead, and
    nothing is written or sent.
    """
    existing = ledger.lookup(part.key for notice in notices for part in notice.parts)
    blocked = suppression.suppressed({notice.recipient.email for notice in notices})
    outcome: dict[str, str] = {}
    if run.fan_out is not None:
        notices = run.fan_out.split(run, notices, existing, outcome)
    for notice in notices:
        if notice.recipient.email in blocked:
            _hold_for_suppression(run, notice, blocked[notice.recipient.email], outcome)
        elif not run.dry_run and run.out_of_time():
            _defer(run, notice, outcome)
        else:
            token = uuid.uuid4().hex
            taken = [p for p in notice.parts if _take(run, notice, p, existing, token, outcome)]
            if taken and run.dry_run:
                _preview(run, notice, taken)
            elif taken:
                attempts = max(_attempts(existing.get(part.key)) for part in taken)
                outcome.update(_send(run, notice, taken, token, attempts))
    return outcome


def _take(
    run: Run,
    notice: Notice[D],
    part: Part[D],
    existing: dict[str, Notification],
    token: str,
    outcome: dict[str, str],
) -> bool:
    """Decide one part from its ledger entry: True when this run sends it (or would).

    Otherwise its status goes into ``outcome``: done, held by another run, abandoned
    by a dead one (recorded failed), or unreadable (reported).
    """
    run.summary.notices_due += 1
    entry = existing.get(part.key)
    current = ledger.state(entry, run.now, run.settle)
    if current == ledger.PENDING and (run.dry_run or _claim(run, notice, part, token)):
        return True
    if current == ledger.PENDING:
        outcome[part.key] = ledger.CLAIMED
    elif current == ledger.ABANDONED and entry is not None and not run.dry_run:
        outcome[part.key] = _abandon(run, part, entry)
        return False
    elif current == UNREADABLE and entry is not None:
        # It may record a notice that went out: report it, never send over it.
        run.invalid(part.key, entry.load_error or UNREADABLE)
        outcome[part.key] = UNREADABLE
        return False
    else:
        outcome[part.key] = entry.status if entry is not None else ledger.CLAIMED
    run.summary.skipped += 1
    return False


def _defer(run: Run, notice: Notice[D], outcome: dict[str, str]) -> None:
    """Leave a notice due for the next run: too little Lambda time is left to send it."""
    run.summary.notices_due += len(notice.parts)
    run.summary.deferred += len(notice.parts)
    outcome.update({part.key: ledger.PENDING for part in notice.parts})


def _hold_for_suppression(
    run: Run, notice: Notice[D], reason: str, outcome: dict[str, str]
) -> None:
    """Leave a notice to a suppressed address unclaimed and unsent.

    SES reported a hard bounce or a complaint for the address: mailing it again
    would hurt the account's reputation. Nothing is written, so the notice goes
    out once the CRM changes the address (while it is still due).
    """
    run.summary.notices_due += len(notice.parts)
    run.summary.suppressed += len(notice.parts)
    outcome.update({part.key: suppression.STATUS for part in notice.parts})
    logger.info(
        "notice held: the address is suppressed",
        extra={
            "check": run.summary.check,
            "recipient_id": notice.recipient.id,
            "reason": reason,
            "keys": [part.key for part in notice.parts],
        },
    )


def _attempts(entry: Notification | None) -> int:
    """How many times this notice has been claimed, this run's claim included."""
    return (int(entry.attempts or 0) if entry is not None else 0) + 1


def _claim(run: Run, notice: Notice[D], part: Part[D], token: str) -> bool:
    """Claim one part; a DynamoDB error leaves it due (nothing was sent) for a retry."""
    try:
        return ledger.claim(_claim_of(run, notice, part, token), run.run_id, run.now, run.settle)
    except LEDGER_ERRORS as exc:
        run.summary.retrying += 1
        run.summary.errors.append(f"claim failed: {_code(exc)}")
        logger.warning(
            "claim failed, left due",
            extra={"check": run.summary.check, "key": part.key, "error": _code(exc)},
        )
        return False


def _abandon(run: Run, part: Part[object], entry: Notification) -> str:
    if not ledger.abandon(entry, run.now):
        run.summary.skipped += 1
        return ledger.CLAIMED
    run.summary.failed += 1
    logger.error(
        "notice abandoned by an interrupted run",
        extra={"check": run.summary.check, "key": part.key, "run": entry.run_id},
    )
    return ledger.FAILED


def _preview(run: Run, notice: Notice[D], parts: Sequence[Part[D]]) -> None:
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


def _claim_of(run: Run, notice: Notice[D], part: Part[D], token: str) -> ledger.Claim:
    return ledger.Claim(
        key=part.key,
        kind=notice.kind,
        item_id=part.item_id,
        recipient_id=notice.recipient.id,
        recipient_email=notice.recipient.email,
        business_date=run.today.isoformat(),
        send_token=token,
    )


def _send(
    run: Run, notice: Notice[D], parts: Sequence[Part[D]], token: str, attempts: int
) -> dict[str, str]:
    """Send one claimed notice and record the outcome on each of its parts."""
    subject = ""
    try:
        email = notice.compose(parts)
        subject = email.subject
        message_id = run.mailer.send(email, token)
    except PermanentSendError as exc:
        run.summary.failed += len(parts)
        logger.error("notice rejected permanently", extra=_about(run, parts, exc.reason))
        return _record(run, parts, ledger.FAILED, exc.reason, subject=subject)
    except AmbiguousSendError as exc:
        return _record(run, parts, *_ambiguous(run, parts, exc), subject=subject)
    # Anything else (throttling, a template bug) must not strand the claims or stop
    # the other notices: release, count as retrying, and the run raises at the end.
    except Exception as exc:
        return _record(run, parts, *_not_sent(run, parts, exc, attempts), subject=subject)
    run.summary.sent += len(parts)
    run.summary.emails_sent += 1
    return _record(run, parts, ledger.SENT, message_id, subject=subject)


def _about(
    run: Run, parts: Sequence[Part[object]], reason: str, **more: object
) -> dict[str, object]:
    return {"check": run.summary.check, "keys": [p.key for p in parts], "reason": reason, **more}


def _ambiguous(run: Run, parts: Sequence[Part[object]], exc: AmbiguousSendError) -> tuple[str, str]:
    """SES may have delivered it: ``unknown`` (settled by its Send event or due again
    after the settling window), or ``failed`` for an operator when no events come."""
    reason = f"outcome unknown, SES may have accepted it: {exc.reason}"
    logger.warning("notice outcome unknown", extra=_about(run, parts, reason))
    if run.settle is None:
        run.summary.failed += len(parts)
        return ledger.FAILED, reason
    run.summary.unknown += len(parts)
    return ledger.UNKNOWN, reason


def _not_sent(
    run: Run, parts: Sequence[Part[object]], exc: Exception, attempts: int
) -> tuple[str, str]:
    """SES did not take it: released for the next run, or given up on after too many
    attempts, so a notice that keeps failing cannot fail every run forever."""
    transient = isinstance(exc, TransientSendError)
    reason = exc.reason if isinstance(exc, TransientSendError) else repr(exc)
    logger.warning(
        "notice not sent",
        extra=_about(run, parts, reason, attempts=attempts),
        exc_info=not transient,
    )
    if attempts >= run.settings.reliability.max_transient_attempts:
        run.summary.failed += len(parts)
        return ledger.FAILED, f"gave up after {attempts} attempts: {reason}"
    run.summary.retrying += len(parts)
    run.summary.errors.append(reason)
    return ledger.PENDING, reason


def _record(
    run: Run, parts: Sequence[Part[object]], status: str, detail: str, *, subject: str
) -> dict[str, str]:
    """Write each part's outcome; a write that fails is logged and left for SES's events.

    The claim then stays until its lease and the settling window run out, so one
    unrecorded outcome neither aborts the run nor sends a duplicate.
    """
    outcome: dict[str, str] = {}
    for part in parts:
        try:
            if status == ledger.SENT:
                ledger.mark_sent(part.key, run.run_id, subject, detail, run.now)
            elif status == ledger.FAILED:
                ledger.mark_failed(part.key, run.run_id, subject, detail, run.now)
            elif status == ledger.UNKNOWN:
                ledger.mark_unknown(part.key, run.run_id, subject, detail, run.now)
            else:
                ledger.release(part.key, run.run_id, detail, run.now)
        except (*LEDGER_ERRORS, ledger.LedgerConflict) as exc:
            run.summary.errors.append(f"recording {status} failed: {_code(exc)}")
            logger.error(
                "outcome not recorded",
                extra={
                    "check": run.summary.check,
                    "key": part.key,
                    "status": status,
                    "error": _code(exc),
                },
            )
            outcome[part.key] = ledger.CLAIMED
            continue
        outcome[part.key] = status
    return outcome


def _code(exc: BaseException) -> str:
    """A DynamoDB error by its code (messages differ between backends), else its type."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", type(exc).__name__))
    return f"{type(exc).__name__}: {exc}"
