"""The hostile-input fuzz in small (part of ``make test``), and proof that its oracle can fail.

``make fuzz`` runs the same harness over at least 10,000 hostile items; this runs a
few hundred, so every ``make test`` still throws encoded words, control characters,
wrong DynamoDB types, oversized ids and absurd numbers at the three checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from chalicelib.mailer import Email, Recipient, render, to_mime
from chalicelib.run import RunSummary
from tests.fuzz.harness import explore, final_line
from tests.fuzz.oracle import Sent, injection_problems, judge, safety_problems
from tests.fuzz.strategies import Case, Expect, Item
from tests.support import LENDER, SENDER, sydney

SENT_AT = sydney("2026-11-23 12:00")

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

SAM = "sam@fuzz.example"
FINAL_LINE = re.compile(
    r"fuzz: \d+ hostile items, \d+ crashes, \d+ unreported, "
    r"\d+ header injections, \d+ unsafe messages"
)


def test_a_few_hundred_hostile_items_break_no_promise() -> None:
    # Given hypothesis-drawn CRM worlds holding at least 300 hostile items
    # When the three checks run over each world
    tally = explore(items=300, seed_value=7, cases=40)

    # Then nothing crashed, every valid notice went out, every bad item was reported
    # once, and every message kept its headers, its recipient and its safety
    assert tally.hostile >= 300
    assert tally.emails_expected > 0
    assert tally.reports_expected > 0
    assert tally.failures == 0, tally.examples
    assert FINAL_LINE.fullmatch(final_line(tally))
    assert final_line(tally).endswith(
        "0 crashes, 0 unreported, 0 header injections, 0 unsafe messages"
    )


def a_notice(html: str = "<p>Hi</p>") -> str:
    """A message as the service builds it for Sam (its raw text)."""
    email = render(
        "note_reminder",
        Recipient("staff-1", "Sam Author", SAM),
        "Note Reminder: Call the valuer",
        {
            "title": "Call the valuer",
            "content": "Chase the report.",
            "reference": "APP-1001",
            "remind_date": "23/11/2026",
            "role": "author",
        },
        lender=LENDER,
    )
    if html != "<p>Hi</p>":
        email = Email(email.to, email.subject, email.text, email.html.replace("<p>", html, 1))
    return to_mime(email, SENDER, date=SENT_AT, lender=LENDER).decode("ascii")


def test_the_oracle_accepts_a_message_as_the_service_builds_it() -> None:
    # Given a notice built by the service for Sam, delivered to Sam
    sent = Sent(a_notice(), [SAM])

    # Then the oracle finds nothing wrong with it
    assert injection_problems(sent) == []
    assert safety_problems(sent) == []


@pytest.mark.parametrize(
    ("change", "destinations"),
    [
        pytest.param(
            lambda raw: raw.replace("Subject:", f"Bcc: x@{'evil.example'}\r\nSubject:", 1),
            [SAM],
            id="bcc",
        ),
        pytest.param(
            lambda raw: raw.replace(f"<{SAM}>", f"<{SAM}>, <x@evil.example>", 1),
            [SAM, "x@evil.example"],
            id="second-to",
        ),
        pytest.param(
            lambda raw: raw.replace("Subject:", "Reply-To: x@evil.example\r\nSubject:", 1),
            [SAM],
            id="extra-header",
        ),
        pytest.param(lambda raw: raw, [SAM, "x@evil.example"], id="extra-destination"),
    ],
)
def test_the_oracle_counts_an_injected_header_or_recipient(
    change: Callable[[str], str], destinations: list[str]
) -> None:
    # Given a notice that gained a header or a recipient on its way
    sent = Sent(change(a_notice()), destinations)

    # When a world's run sent it
    tally = judge([], [], [], [sent], set())

    # Then it is counted as a header injection
    assert injection_problems(sent)
    assert tally.injections == 1
    assert tally.failures >= 1


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: a_notice("<script>alert(1)</script><p>"), id="script"),
        pytest.param(lambda: a_notice('<p onclick="x">'), id="event-attribute"),
        pytest.param(lambda: a_notice("</td></tr></table><p>"), id="closing-tags"),
        pytest.param(
            lambda: a_notice().replace("Subject: Note", "Subject: Zo\u00eb Note", 1), id="8-bit"
        ),
        pytest.param(
            lambda: a_notice().replace("Subject: Note", "Subject: " + "x" * 1000 + " Note", 1),
            id="long-line",
        ),
    ],
)
def test_the_oracle_counts_raw_html_8_bit_text_and_long_lines_as_unsafe(
    make: Callable[[], str],
) -> None:
    # Given a notice with raw HTML from the CRM, 8-bit text or a line over 998 characters
    sent = Sent(make(), [SAM])

    # When a world's run sent it
    tally = judge([], [], [], [sent], set())

    # Then it is counted as unsafe
    assert tally.unsafe == 1


def test_the_oracle_counts_missed_notices_and_unreported_repeated_or_unshortened_reports() -> None:
    # Given a case that expects a notice to Sam, reports of note-1 and of a long-id note,
    # and a failed address
    long_id = "note-" + "é" * 1000
    case = Case(
        "note:valid",
        [Item("notes", {"id": {"S": "note-1"}}, True)],
        Expect(emails=[(SAM, "Note Reminder: ", "ZQ")], reports=["note-1", long_id], failed=[SAM]),
    )
    # And runs that sent nothing, reported note-2 twice, the long id in full, and
    # recorded no failure
    reports = [{"item_id": "note-2", "reason": "r"}] * 2 + [{"item_id": long_id, "reason": "r"}]
    summary = RunSummary("note_reminders", "2026-11-23", "run-1", invalid_items=reports)

    # When the oracle judges them
    tally = judge([case], [summary], ["note_reminders: KeyError"], [], set())

    # Then each broken promise is counted
    assert (tally.crashes, tally.missed, tally.unreported) == (1, 1, 2)
    assert (tally.duplicate_reports, tally.false_reports, tally.untruncated) == (1, 1, 1)
    assert final_line(tally) == (
        "fuzz: 1 hostile items, 1 crashes, 2 unreported, 0 header injections, 0 unsafe messages"
    )
