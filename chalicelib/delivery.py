"""Claim-then-send delivery of a run's notices (the run itself: :mod:`chalicelib.run`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from queue import SimpleQueue
from typing import Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.exceptions import PynamoDBException

from chalicelib import ledger, suppression
from chalicelib.mailer import (
    AmbiguousSendError,
    Email,
    PermanentSendError,
    Recipient,
    ThrottledSendError,
    TransientSendError,
)
from chalicelib.models import UNREADABLE, Notification
from chalicelib.observability import logger, mask_addresses
from chalicelib.run import Part, Run, RunSummary
from chalicelib.sending import FALLBACK_SEND_RATE, Sending, SendQuota

# What each part of a notice carries for its email (Part.data), per check.
D = TypeVar("D")
# The name prefix of a run's worker threads.
WORKER_THREADS = "deliver"
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

    Notices are sent concurrently, paced at the account's SES send rate and never
    beyond what is left of its 24-hour quota (both read from SES once per run):
    the rest stay due, unclaimed, and are counted in ``quota_deferred``.
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
        notices = run.fan_out.split(run, notices, existing, outcome, lambda: _sending(run).rate)
    held_for_quota: list[str] = []
    with _Workers(run, outcome) as workers:
        for notice in notices:
            if notice.recipient.email in blocked:
                _hold_for_suppression(run, notice, blocked[notice.recipient.email], outcome)
                continue
            workers.make_room()
            if not run.dry_run and run.out_of_time():
                _defer(run, notice, outcome)
            elif not run.dry_run and not _may_send(run, notice, existing):
                # Sent, held by another run or unreadable: decided here, with no email.
                outcome.update(_deliver_one(run, notice, existing).outcome)
            elif not run.dry_run and not workers.reserve_email():
                held_for_quota += _defer_for_quota(run, notice, outcome)
            else:
                workers.submit(notice, existing)
    if held_for_quota:
        _log_quota_reached(run, held_for_quota)
    return outcome


@dataclass(frozen=True)
class _Delivered:
    """What delivering one notice in a worker did: folded into the run by its thread."""

    outcome: dict[str, str]
    summary: RunSummary
    # The notice went to SES, so its email counts against the 24-hour quota.
    emailed: bool


class _Workers:
    """The run's worker threads: at most ``sending.workers`` notices in flight.

    Each worker delivers one notice with a summary of its own; the thread that
    hands out notices folds the results into the run's summary and outcome, so
    the counts are exact without a lock. The pool and the SES quota (one
    ``GetAccount``) are set up on the first notice to claim: a run with nothing
    to send asks SES for nothing.
    """

    def __init__(self, run: Run, outcome: dict[str, str]) -> None:
        self._run = run
        self._outcome = outcome
        self._pool: ThreadPoolExecutor | None = None
        self._limit = 1
        # Notices handed to a worker and not yet folded in; each one's future is put on
        # ``_done`` as it completes, so waiting for one costs the same with 1 or 40 in
        # flight (``concurrent.futures.wait`` re-arms a waiter on every future each call).
        self._flying = 0
        self._done: SimpleQueue[Future[_Delivered]] = SimpleQueue()

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self._settle_all()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def _start(self) -> ThreadPoolExecutor:
        if self._pool is None:
            if not self._run.dry_run:
                # A dry run lists its notices in order, from one worker.
                self._limit = _sending(self._run).workers
            self._pool = ThreadPoolExecutor(self._limit, thread_name_prefix=WORKER_THREADS)
        return self._pool

    def make_room(self) -> None:
        """Wait until fewer than the run's concurrency of notices are in flight."""
        while self._flying >= self._limit:
            self._fold(self._done.get())

    def reserve_email(self) -> bool:
        """Take one email of the 24-hour quota; False when it is spent.

        Notices in flight that turn out to need no email (already sent, claimed
        by another run) give theirs back, so before saying no, wait for them.
        """
        self._start()
        sending = _sending(self._run)
        if sending.reserve():
            return True
        if not self._flying:
            return False
        self._settle_all()
        return sending.reserve()

    def submit(self, notice: Notice[D], existing: dict[str, Notification]) -> None:
        """Deliver ``notice`` in a worker, on a summary of its own."""
        pool = self._start()
        own = replace(self._run, summary=_empty_like(self._run.summary))
        future = pool.submit(_deliver_one, own, notice, existing)
        self._flying += 1
        future.add_done_callback(self._done.put)

    def _settle_all(self) -> None:
        while self._flying:
            self._fold(self._done.get())

    def _fold(self, future: Future[_Delivered]) -> None:
        self._flying -= 1
        delivered = future.result()
        self._outcome.update(delivered.outcome)
        self._run.summary.absorb(delivered.summary)
        if not delivered.emailed and not self._run.dry_run:
            _sending(self._run).give_back()


def _deliver_one(run: Run, notice: Notice[D], existing: dict[str, Notification]) -> _Delivered:
    """Claim, send and record one notice, counted on ``run``'s summary (a worker's own)."""
    outcome: dict[str, str] = {}
    token = uuid.uuid4().hex
    taken = [p for p in notice.parts if _take(run, notice, p, existing, token, outcome)]
    if taken and run.dry_run:
        _preview(run, notice, taken)
    elif taken:
        attempts = max(_attempts(existing.get(part.key)) for part in taken)
        outcome.update(_send(run, notice, taken, token, attempts))
    return _Delivered(outcome, run.summary, emailed=bool(taken) and not run.dry_run)


def _may_send(run: Run, notice: Notice[D], existing: dict[str, Notification]) -> bool:
    """True when the ledger has a part of ``notice`` due: only then may it take an email."""
    return any(
        ledger.state(existing.get(part.key), run.now, run.settle) == ledger.PENDING
        for part in notice.parts
    )


def _empty_like(summary: RunSummary) -> RunSummary:
    return RunSummary(
        check=summary.check,
        business_date=summary.business_date,
        run_id=summary.run_id,
        dry_run=summary.dry_run,
    )


def _sending(run: Run) -> Sending:
    """The run's pace and 24-hour quota, read from SES on first use: once per run."""
    if run.sending is None:
        run.sending = _read_sending(run)
    return run.sending


def _read_sending(run: Run) -> Sending:
    """Read the account's send quota; without it, send at the slowest rate SES has.

    A run never sends unpaced: when ``GetAccount`` fails (a network error, a
    missing permission) it sends at :data:`FALLBACK_SEND_RATE` and leaves the
    24-hour quota to SES, which refuses sends beyond it (released, not lost).
    """
    limits = run.settings.send
    quota: SendQuota | None
    try:
        quota = run.mailer.send_quota()
    except (ClientError, BotoCoreError) as exc:
        logger.error(
            "SES send quota not read, sending at the fallback rate",
            extra={"check": run.summary.check, "error": _code(exc), "rate": FALLBACK_SEND_RATE},
        )
        quota = None
    sending = Sending.for_quota(
        quota, limits.send_rate_percent, limits.send_concurrency, run.mailer.clock
    )
    run.summary.send_rate = round(sending.rate, 3)
    run.summary.quota_remaining = sending.remaining
    logger.info(
        "sending paced at the SES quota",
        extra={
            "check": run.summary.check,
            "max_send_rate": quota.max_send_rate if quota else None,
            "rate": run.summary.send_rate,
            "quota_remaining": sending.remaining,
            "workers": sending.workers,
        },
    )
    return sending


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


def _defer_for_quota(run: Run, notice: Notice[D], outcome: dict[str, str]) -> list[str]:
    """Leave a notice due, unclaimed: sending it would exceed the 24-hour SES quota."""
    run.summary.notices_due += len(notice.parts)
    run.summary.quota_deferred += len(notice.parts)
    outcome.update({part.key: ledger.PENDING for part in notice.parts})
    return [part.key for part in notice.parts]


# How many of the keys left due for the quota one log line lists.
LOGGED_QUOTA_KEYS = 20


def _log_quota_reached(run: Run, keys: list[str]) -> None:
    logger.warning(
        "24-hour SES quota reached, notices left due",
        extra={
            "check": run.summary.check,
            "quota_deferred": len(keys),
            "quota_remaining_at_start": run.summary.quota_remaining,
            "keys": keys[:LOGGED_QUOTA_KEYS],
        },
    )


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
            "item_ids": [part.item_id for part in parts],
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
        pace = run.sending.pacer.wait if run.sending is not None else None
        # Dated by the run's clock, in business time, as the email's text is.
        date = run.now.astimezone(run.settings.timezone)
        message_id = run.mailer.send(email, token, date=date, pace=pace)
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
    if isinstance(exc, ThrottledSendError):
        run.summary.throttled += 1
        _slow_down(run)
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


def _slow_down(run: Run) -> None:
    """SES throttled a paced run: something else sends from the account, so halve the pace."""
    if run.sending is None:
        return
    rate = run.sending.pacer.slow_down(
        0.5, FALLBACK_SEND_RATE * run.settings.send.send_rate_percent / 100
    )
    logger.warning(
        "SES throttled the run, pacing slower",
        extra={"check": run.summary.check, "rate": round(rate, 3)},
    )


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
