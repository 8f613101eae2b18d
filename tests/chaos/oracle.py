"""The soak's oracle: map accepted messages to notice identities, then count.

An identity is what one notice promises: (recipient, kind, item), where item is
the note id, the repayment's loan reference and due date, or a stale application's
reference and its 7-day cycle. It is read from the message SES accepted (its To
header, subject and text part), never from the ledger of the code under test.
"""

from __future__ import annotations

import email
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses

Identity = tuple[str, str, str]

STALE_AFTER_DAYS = 14
STALE_REPEAT_DAYS = 7

_NOTE = re.compile(r"\[(N-\d+)\]")
_LOAN = re.compile(r"on loan (\S+?)[\s,]")
_DATE = re.compile(r"\b(\d{2}/\d{2}/\d{4})\b")
_STALE_ROW = re.compile(r"^- (\S+): .*?(\d+) days in stage", re.MULTILINE)
# A row of a BDM's escalation digest: "- <loan>: <borrowers>, <amount> due <date>, ..."
_ESCALATION_ROW = re.compile(
    r"^- (\S+): .*? due (\d{2}/\d{2}/\d{4}), \d+ days overdue$", re.MULTILINE
)
_REPAYMENT_KINDS = (
    ("Upcoming Repayment Reminder", "repayment_upcoming"),
    ("OVERDUE Repayment Notice", "repayment_overdue_3_day"),
    ("URGENT:", "repayment_overdue_7_day"),
)


def parse(raw: str | bytes) -> EmailMessage:
    """A raw MIME message as SES received it."""
    parsed = (
        email.message_from_bytes(raw, policy=default)
        if isinstance(raw, bytes)
        else email.message_from_string(raw, policy=default)
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


def identities(message: EmailMessage) -> list[Identity]:
    """The notices one message delivers; ``("?", subject, to)`` when it names none."""
    to = ",".join(sorted(addr.lower() for _, addr in getaddresses(message.get_all("To", []))))
    subject = " ".join(str(message.get("Subject", "")).split())
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else ""
    if subject.startswith("Note Reminder:"):
        found = _NOTE.search(subject)
        if found:
            return [(to, "note_reminders", found.group(1))]
    elif subject.startswith("Stale Application Alert:"):
        rows = [
            (
                to,
                "stale_applications",
                f"{ref}#cycle{(int(days) - STALE_AFTER_DAYS) // STALE_REPEAT_DAYS}",
            )
            for ref, days in _STALE_ROW.findall(text)
        ]
        if rows:
            return rows
    elif subject.startswith("ESCALATION:"):
        escalations = [
            (to, "repayment_overdue_10_day", f"{loan}#{due}")
            for loan, due in _ESCALATION_ROW.findall(text)
        ]
        if escalations:
            return escalations
    else:
        for prefix, kind in _REPAYMENT_KINDS:
            if subject.startswith(prefix):
                loan, due = _LOAN.search(text), _DATE.search(text)
                if loan and due:
                    return [(to, kind, f"{loan.group(1)}#{due.group(1)}")]
    return [("?", subject, to)]


@dataclass
class Tally:
    """Deliveries measured against the expected notices."""

    expected: int
    once: int
    duplicates: int
    lost: int
    unknown: int
    unexpected: int = 0
    rejected: int = 0
    duplicate_ids: list[Identity] = field(default_factory=list)
    lost_ids: list[Identity] = field(default_factory=list)
    unexpected_ids: list[Identity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The soak's target: nothing twice, nothing lost, nothing left unknown."""
        return self.duplicates == 0 and self.lost == 0 and self.unknown == 0


def tally(
    expected: Iterable[Identity],
    delivered: Iterable[Identity],
    *,
    unknown: int = 0,
    reported_failed: Iterable[Identity] = (),
) -> Tally:
    """Count each expected identity delivered once, extra deliveries, and the missing.

    A delivery of an identity that was not expected at all (a notice the rules do not
    send, such as a superseded reminder after a replay) is an extra delivery too: it is
    counted as a duplicate and listed as unexpected. ``reported_failed`` are notices SES
    refused permanently (an injected MessageRejected) that the ledger reports as
    failed: expected but correctly failed, so counted in ``rejected``, not ``lost``.
    """
    wanted = set(expected)
    counts = Counter(delivered)
    excused = set(reported_failed)
    once = sum(1 for ident in wanted if counts[ident] == 1)
    dup_ids = sorted(ident for ident in wanted if counts[ident] > 1)
    unexpected_ids = sorted(ident for ident in counts if ident not in wanted)
    missing = sorted(ident for ident in wanted if counts[ident] == 0)
    lost_ids = [ident for ident in missing if ident not in excused]
    duplicates = sum(counts[i] - 1 for i in dup_ids) + sum(counts[i] for i in unexpected_ids)
    return Tally(
        expected=len(wanted),
        once=once,
        duplicates=duplicates,
        lost=len(lost_ids),
        unknown=unknown,
        unexpected=len(unexpected_ids),
        rejected=len(missing) - len(lost_ids),
        duplicate_ids=dup_ids,
        lost_ids=lost_ids,
        unexpected_ids=unexpected_ids,
    )


def summary_line(invocations: int, faulted: int, result: Tally) -> str:
    """The soak's last line (its format is part of the contract, issue 7)."""
    return (
        f"chaos: {invocations} invocations, {faulted} faulted, {result.expected} expected, "
        f"{result.once} delivered once, {result.duplicates} duplicates, {result.lost} lost, "
        f"{result.unknown} unknown"
    )


def table(title: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A plain left/right aligned text table (first column left, the rest right)."""
    head = list(title)
    body = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, body)])


def count_by(values: Mapping[str, int]) -> list[tuple[str, int]]:
    """``values`` as sorted rows."""
    return sorted(values.items())
