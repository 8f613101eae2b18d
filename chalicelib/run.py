"""One run of one check: its clock, settings, mailer and summary, and the reports it makes.

A check reads the CRM through :meth:`Run.fetch`, reports bad items with
:meth:`Run.invalid`, turns people into recipients with :meth:`Run.recipient` and
ledger keys into :class:`Part` s with :meth:`Run.part`; :mod:`chalicelib.delivery`
then claims, sends and records its notices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar

from chalicelib.config import Settings
from chalicelib.formatting import valid_email
from chalicelib.limits import EMAIL_CHARS, fits_key, key_problem, quoted, shorten
from chalicelib.mailer import Mailer, Recipient
from chalicelib.models import Borrower, CrmModel, Staff
from chalicelib.observability import logger
from chalicelib.sending import Sending

if TYPE_CHECKING:
    from chalicelib.fanout import FanOut

_M = TypeVar("_M", bound=CrmModel)
_D = TypeVar("_D")
# A part only carries its data, so a Part[Row] is usable wherever a Part[object] is.
_D_co = TypeVar("_D_co", covariant=True)

# What the log shows of each email a dry run would send (no names, no subjects).
_LOGGED_WOULD_SEND = ("kind", "recipient_id", "recipient_email", "item_ids", "keys")


class WouldSend(TypedDict):
    """One email a dry run would send, as :attr:`RunSummary.would_send` lists it."""

    kind: str
    recipient_id: str
    recipient_name: str
    recipient_email: str
    subject: str
    # The CRM items the email covers (a digest: several), in the order of ``keys``.
    item_ids: list[str]
    keys: list[str]


# How much of a reason an invalid-item report keeps (reasons quote the CRM's values).
REPORTED_REASON_CHARS = 300


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
    unknown: int = 0
    deferred: int = 0
    # Handed to the fan-out queue (chalicelib.fanout): its consumer delivers them.
    enqueued: int = 0
    # Notices left due because the account's 24-hour SES quota would run out.
    quota_deferred: int = 0
    # SES sends refused for sending too fast (each counted, none hidden by retries).
    throttled: int = 0
    suppressed: int = 0
    invalid: int = 0
    invalid_items: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False
    would_send: list[WouldSend] = field(default_factory=list)
    # Emails a second the run paced its sends at (0: it sent nothing), and what was
    # left of the 24-hour quota when it read it (None: unlimited or not read).
    send_rate: float = 0.0
    quota_remaining: int | None = None

    def absorb(self, other: RunSummary) -> None:
        """Add the counts and lists of ``other`` (one notice's share of the run) to these."""
        for name in _SUMMARY_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif type(mine) is int and name != "quota_remaining":
                setattr(self, name, mine + theirs)

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
            {name: value for name, value in item.items() if name in _LOGGED_WOULD_SEND}
            for item in self.would_send
        ]
        return data


# Read once: ``dataclasses.fields`` rebuilds its tuple on every call, and ``absorb``
# runs once per notice.
_SUMMARY_FIELDS = tuple(f.name for f in fields(RunSummary))


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
    # Milliseconds of Lambda time left (the context's), or None when unbounded.
    remaining_ms: Callable[[], int] | None = None
    # Where notices beyond the remaining time go (a scheduled run with a queue), if anywhere.
    fan_out: FanOut | None = None
    # The run's pace and 24-hour quota, read from SES before its first send.
    sending: Sending | None = None
    _reported: set[tuple[str, str]] = field(default_factory=set, repr=False)

    @property
    def settle(self) -> timedelta | None:
        """How long SES's events may take to settle a send; None when none are published."""
        if self.settings.ses_configuration_set is None:
            return None
        return timedelta(minutes=self.settings.reliability.settle_minutes)

    def out_of_time(self) -> bool:
        """True when too little Lambda time is left to claim and send another notice."""
        if self.remaining_ms is None:
            return False
        return self.remaining_ms() < self.settings.reliability.time_margin_seconds * 1000

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

    def part(self, key: str, item_id: str, data: _D) -> Part[_D] | None:
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

    def recipient(
        self, person: Staff | Borrower | None, role: str, person_id: str, *, for_item: str
    ) -> Recipient | None:
        """A Recipient for a staff member or borrower; ``None`` when none can be made.

        Why not (missing, unreadable, no valid address) is reported against
        ``for_item``, the CRM item whose notice it was for.
        """
        shown = f"{role} {quoted(person_id)}"
        if person is None:
            self.invalid(for_item, f"{shown} does not exist")
        elif person.load_error:
            self.invalid(for_item, f"{shown}: {person.load_error}")
        elif not valid_email(person.email) or len(person.email) > EMAIL_CHARS:
            self.invalid(for_item, f"{shown} has no valid email address")
        else:
            return Recipient(
                id=person.id,
                name=(person.name or "").strip() or person.email,
                email=person.email.strip(),
                first_name=(person.first_name or "").strip() or None,
            )
        return None


@dataclass(frozen=True)
class Part(Generic[_D_co]):
    """One ledger entry of a notice: the CRM item it concerns and its data for the email."""

    key: str
    item_id: str
    data: _D_co
