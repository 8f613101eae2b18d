"""Hostile CRM input: header injection, unbuildable messages, items that used to stop a run.

Issue 7, classes 1 ("Recipients added through CRM text"), 2 ("One bad item stops
everyone"), the unbuildable-message part of 3 ("Poison notices") and the input
findings of 8: no CRM text can add, change or split a header or add a recipient;
every message is 7-bit clean with short lines; a message that cannot be built is
failed permanently (not retried); an absurd amount, an oversized id or a malformed
``paid_date`` is reported once with its (truncated) id and the run goes on.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from email.utils import getaddresses
from typing import Any

import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger
from chalicelib.config import Settings
from chalicelib.models import REPAYMENTS_PENDING, Notification, Repayment
from chalicelib.run import RunSummary
from tests import factories as f
from tests.factories import BEN, BROOKE, SAM
from tests.support import (
    REGION,
    TOP_LEVEL_HEADERS,
    ledger_key,
    run,
    sent_emails,
    ses_faults,
    subjects_by_recipient,
    sydney,
)

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

MONDAY = sydney("2026-11-23 09:00")
# The factories' repayment: loan APP-1001, due 30/11/2026.
UPCOMING = "Upcoming Repayment Reminder: APP-1001 due 30/11/2026"


def raw_messages() -> list[str]:
    """The raw MIME text of every message moto's SES accepted."""
    return [m.raw_data for m in ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages]


def destinations() -> list[list[str]]:
    """The addresses SES (moto) was asked to deliver each accepted message to."""
    captured = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    return [[addr for _, addr in getaddresses(raw.destinations)] for raw in captured]


def header_names(raw: str) -> list[str]:
    """The top-level header names of a raw message, lower-cased, in order."""
    head = raw.replace("\r\n", "\n").split("\n\n", 1)[0]
    return [line.split(":", 1)[0].lower() for line in head.split("\n") if line[:1] not in " \t"]


def ledger_entry(key: str) -> Notification:
    return Notification.get(key, consistent_read=True)


def invalid_reasons(summary: RunSummary, item_id: str) -> list[str]:
    return [i["reason"] for i in summary.invalid_items if i["item_id"] == item_id]


def note_to_sam_only(**note: str) -> None:
    """Given a note due today whose application has no BDM, so it goes to Sam alone."""
    f.crm()
    f.application(bd_id=None)
    f.note(**note)


# --- class 1: recipients added through CRM text ------------------------------------------

ENCODED_WORD_BCC = "=?utf-8?q?x=0D=0ABcc:_attacker@evil.example?="


def test_an_encoded_word_in_a_note_title_cannot_add_a_bcc(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note title that is an RFC 2047 encoded word decoding to CR LF "Bcc: ..."
    note_to_sam_only(title=ENCODED_WORD_BCC)

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then SES delivers to Sam alone, and the title shows literally in the subject
    assert destinations() == [[SAM]]
    [raw] = raw_messages()
    assert header_names(raw) == TOP_LEVEL_HEADERS
    [sent] = sent_emails()
    assert sent.subject == f"Note Reminder: {ENCODED_WORD_BCC}"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("=?utf-8?b?ZXZpbEBldmlsLmV4YW1wbGU+LA==?=", id="base64-address"),
        pytest.param("=?utf-8?q?Evil_<attacker@evil.example>,?= Sam", id="q-name-and-address"),
        pytest.param('Sam" <attacker@evil.example>, "x', id="quote-break-out"),
    ],
)
def test_a_staff_name_that_decodes_to_an_address_cannot_add_a_second_to(
    service: Settings, ses: SESV2Client, name: str
) -> None:
    # Given the note author's name is an encoded word that decodes to "<address>,"
    f.crm(author=False)
    f.staff("staff-2", name, SAM)
    f.application(bd_id=None)
    f.note()

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then the message has one To, Sam's, and SES delivers to Sam alone
    assert destinations() == [[SAM]]
    [sent] = sent_emails()
    assert sent.recipients == [SAM]
    assert len(sent.message.get_all("To", [])) == 1


def test_control_and_bidi_characters_never_reach_the_subject(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note title full of control characters: NUL, FS, DEL, a C1 and bidi overrides
    note_to_sam_only(title="Call\x00 the\x1c val\x7fuer\x9b \u202etxt.exe\u202c \u2066ok\u2069")

    # When the note check runs (none of them makes the message unbuildable)
    summary = run("note_reminders", MONDAY, ses)

    # Then the reminder goes out with the characters removed
    assert summary.sent == 1
    [sent] = sent_emails()
    assert sent.subject == "Note Reminder: Call the val uer txt.exe ok"
    assert destinations() == [[SAM]]


def test_every_message_is_seven_bit_clean_with_lines_of_at_most_998_characters(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note with a unicode title and a 5,000-character single-line unicode content
    content = ("Überprüfung der Bewertung — ünïcödé ✓ " * 200)[:5000]
    note_to_sam_only(title="Zoë's valuation ✓", content=content)

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then the raw message is ASCII only and no line is longer than 998 characters
    [raw] = raw_messages()
    assert raw.isascii()
    assert max(len(line) for line in raw.split("\r\n")) <= 998
    # And the reader still gets the exact text in both parts
    [sent] = sent_emails()
    assert sent.subject == "Note Reminder: Zoë's valuation ✓"
    assert content in sent.text
    assert content in sent.html


# --- class 3 (input part): a message that cannot be built is permanent ------------------


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("zoë@example.net", id="non-ascii-local-part"),
        pytest.param("zo\x00e@example.net", id="nul-in-local-part"),
    ],
)
def test_an_address_ses_cannot_take_is_failed_permanently_and_the_run_succeeds(
    service: Settings, ses: SESV2Client, address: str
) -> None:
    # Given rep-1 is due to Ben and to Zoë, whose address SES cannot send to
    f.crm()
    f.borrower("bor-2", "Zoë Adams", address)
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment()

    # When the run sends (it does not raise)
    with ses_faults(ses, lambda to: None) as attempted:
        summary = run("repayment_reminders", MONDAY, ses)

    # Then Ben's notice went out, Zoë's is failed with a reason and never reached SES
    assert attempted == [BEN]
    assert subjects_by_recipient() == {BEN: [UPCOMING]}
    assert (summary.sent, summary.failed, summary.retrying) == (1, 1, 0)
    zoe = ledger_entry(ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2"))
    assert zoe.status == ledger.FAILED
    assert "address" in (zoe.failure_reason or "")

    # And the next run does not try again
    later = run("repayment_reminders", sydney("2026-11-23 10:00"), ses)
    assert (later.sent, later.failed, later.retrying) == (0, 0, 0)
    assert (
        ledger_entry(ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")).attempts == 1
    )


# --- class 2: one bad item stops everyone ------------------------------------------------


@pytest.mark.parametrize("amount", ["1e26", "-9.99e125", "123456789012345678901234567890.12"])
def test_an_absurd_repayment_amount_is_reported_and_the_others_sent(
    service: Settings, ses: SESV2Client, amount: str
) -> None:
    # Given rep-huge's amount is absurdly large, next to a healthy rep-1
    f.crm()
    f.application()
    f.repayment()
    f.raw_item(
        "test-repayments",
        {
            "id": {"S": "rep-huge"},
            "application_id": {"S": "app-1"},
            "amount": {"N": amount},
            "due_date": {"S": "2026-11-30"},
        },
    )

    # When the repayment check runs (it does not crash)
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-huge is reported once and rep-1 still goes out
    [reason] = invalid_reasons(summary, "rep-huge")
    assert "amount" in reason
    assert subjects_by_recipient() == {BEN: [UPCOMING]}


def test_an_absurd_loan_amount_is_reported_and_the_digest_still_sent(
    service: Settings, ses: SESV2Client
) -> None:
    # Given stale app-2's loan amount is 1e26, next to a healthy stale app-1
    f.crm()
    f.application()
    f.application("app-2", reference_number="APP-1002", loan_amount=10**26)

    # When the stale check runs (it does not crash)
    summary = run("stale_applications", MONDAY, ses)

    # Then app-2 is reported and Brooke's digest lists app-1
    [reason] = invalid_reasons(summary, "app-2")
    assert "loan_amount" in reason
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}


def test_the_same_problem_of_one_item_is_reported_once(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given app-1 lists the same dangling borrower id three times next to Ben
    f.crm()
    f.application(borrower_ids=["bor-1", "bor-ghost", "bor-ghost", "bor-ghost"])
    f.repayment()

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then the dangling id is reported once, in the summary and in the log
    assert invalid_reasons(summary, "rep-1") == ["borrower 'bor-ghost' does not exist"]
    assert summary.invalid == 1
    logged = [r for r in stdout_json() if r.get("message") == "skipped invalid item"]
    assert len(logged) == 1
    assert subjects_by_recipient() == {BEN: [UPCOMING]}


# --- class 8: malformed paid_date, dry-run logs -----------------------------------------


def test_a_malformed_paid_date_is_reported_and_not_sent(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1's paid_date is 30 February, still marked pending, next to a healthy rep-2
    f.crm()
    f.application()
    f.repayment(
        paid_date="2026-02-30",
        pending_check=REPAYMENTS_PENDING,
        next_notice_on=f.CHANGED_ON,
    )
    f.repayment("rep-2")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-1 is reported (not silently counted as paid) and not reminded
    [reason] = invalid_reasons(summary, "rep-1")
    assert "paid_date" in reason
    assert "2026-02-30" in reason
    assert [e.item_id for e in Notification.by_item.query("rep-1")] == []
    assert not Repayment.get("rep-1").reminder_sent
    # And rep-2 is reminded
    assert subjects_by_recipient() == {BEN: [UPCOMING]}


def test_a_dry_run_logs_no_names_or_note_titles(
    service: Settings, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a note with a telling title, due to Sam and Brooke
    f.crm()
    f.application()
    f.note(title="Divorce settlement of the Lee family")

    # When an operator runs a dry run
    summary = run("note_reminders", MONDAY, dry_run=True)

    # Then the returned summary lists names and subjects for the operator
    assert {w["recipient_name"] for w in summary.would_send} == {"Sam Author", "Brooke Davis"}
    # But no log line holds a name, a title or a full address
    text = json.dumps(stdout_json())
    for secret in ("Sam Author", "Brooke Davis", "Divorce settlement", SAM, BROOKE):
        assert secret not in text
    assert "s***@lender.example.com.au" in text


def test_recipients_counted_once_each_in_a_normal_run(service: Settings, ses: SESV2Client) -> None:
    # Given a healthy note to Sam and Brooke (the hardened builder changes nothing for them)
    f.crm()
    f.application()
    f.note()

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then each gets one message with a plain To and the usual subject
    assert Counter(d for ds in destinations() for d in ds) == Counter({SAM: 1, BROOKE: 1})
    for raw in raw_messages():
        assert header_names(raw) == TOP_LEVEL_HEADERS
    assert {s.subject for s in sent_emails()} == {"Note Reminder: Call the valuer"}


# --- class 2: keys over DynamoDB's limits (proved on DynamoDB Local: moto does not enforce)

HUGE_REF = "x" * 3000  # over the 2,048-byte partition-key limit
LONG_ID = "é" * 1020  # 2,040 bytes: a valid id, but any ledger key built from it is over


def test_a_reference_over_the_key_limit_is_reported_and_the_others_sent(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-big points at an application id and rep-1's application at a borrower id
    # over DynamoDB's key limit, next to healthy items
    f.crm()
    f.application(borrower_ids=["bor-1", HUGE_REF])
    f.application("app-2", reference_number="APP-1002", bd_id=HUGE_REF)
    f.note()
    f.note("note-big", application_id=HUGE_REF)
    f.repayment()

    # When the checks run (no BatchGetItem carries the oversized id)
    notes = run("note_reminders", MONDAY, ses)
    repayments = run("repayment_reminders", MONDAY, ses)
    stale = run("stale_applications", MONDAY, ses)

    # Then each is reported once as dangling, with the id shortened, and the others go out
    [note_reason] = invalid_reasons(notes, "note-big")
    assert note_reason.startswith("application 'xxx")
    assert len(note_reason) < 400
    [borrower_reason] = invalid_reasons(repayments, "rep-1")
    assert "does not exist" in borrower_reason
    [bdm_reason] = invalid_reasons(stale, "app-2")
    assert "does not exist" in bdm_reason
    assert sorted(subjects_by_recipient()) == sorted([SAM, BROOKE, BEN])


def test_an_item_whose_ledger_key_would_be_over_the_limit_is_reported_with_its_id_shortened(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a repayment, a note and a stale application whose ids are 2,040 bytes long
    f.crm()
    f.application()
    f.application(LONG_ID, reference_number="APP-LONG")
    f.note()
    f.note(LONG_ID, title="Long")
    f.repayment()
    f.repayment(LONG_ID)

    # When the checks run
    summaries = [
        run("note_reminders", MONDAY, ses),
        run("repayment_reminders", MONDAY, ses),
        run("stale_applications", MONDAY, ses),
    ]

    # Then each long item is reported once under its first 100 characters, and never claimed
    for summary in summaries:
        [report] = [i for i in summary.invalid_items if i["item_id"].startswith("é")]
        assert report["item_id"] == "é" * 100 + "…"
        assert report["reason"] == "ledger key is over DynamoDB's 2048-byte key limit"
    assert list(Notification.by_item.query("rep-1"))
    # And the healthy items' notices all went out
    assert subjects_by_recipient() == {
        SAM: ["Note Reminder: Call the valuer"],
        BROOKE: ["Note Reminder: Call the valuer", "Stale Application Alert: APP-1001"],
        BEN: [UPCOMING],
    }


# --- found by `make fuzz` ----------------------------------------------------------------


def test_ids_holding_the_key_separator_cannot_make_two_notices_share_a_ledger_key(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note "n" by staff "x#2026-11-23#y" and note "n#2026-11-23#x" by staff "y":
    # joined with "#" as they are, both notices would have one ledger key
    f.staff("x#2026-11-23#y", "Xavier", "xavier@lender.example.com.au")
    f.staff("y", "Yvonne", "yvonne@lender.example.com.au")
    f.note("n", title="First", application_id=None, created_by="x#2026-11-23#y")
    f.note("n#2026-11-23#x", title="Second", application_id=None, created_by="y")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then each author gets their own reminder: neither is skipped as already sent
    assert subjects_by_recipient() == {
        "xavier@lender.example.com.au": ["Note Reminder: First"],
        "yvonne@lender.example.com.au": ["Note Reminder: Second"],
    }
    assert (summary.sent, summary.skipped) == (2, 0)
    # And the stored keys are escaped exactly so (written out, not built: this pins the format)
    assert Notification.get("note_reminders#n#2026-11-23#x%232026-11-23%23y").status == "sent"
    assert Notification.get("note_reminders#n%232026-11-23%23x#2026-11-23#y").status == "sent"


def test_a_borrower_at_an_internationalised_domain_is_reminded(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Ben's address is at an internationalised (non-ASCII) domain
    f.crm(borrowers=0)
    f.borrower(email="ben@bücher.example")
    f.application()
    f.repayment()

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then it is not reported as invalid: SES gets the domain in its ASCII form
    assert summary.invalid_items == []
    assert destinations() == [["ben@xn--bcher-kva.example"]]
    assert subjects_by_recipient() == {"ben@xn--bcher-kva.example": [UPCOMING]}


def test_accented_and_non_latin_names_arrive_intact_in_every_part_of_the_message(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Zoë's loan, borrowed by José Núñez and Nguyễn Thị Hoa (a first name for José
    # only), with one repayment due soon and one escalated
    f.staff("bdm-1", "Zoë Papadopoulos", BROOKE, first_name="Zoë")
    f.borrower("bor-1", "José Núñez", BEN, first_name="José")
    f.borrower("bor-2", "Nguyễn Thị Hoa", "hoa@example.net")
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment(due_date="2026-11-30")
    f.repayment("rep-2", due_date="2026-11-11")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then every message went out 7-bit clean, its names encoded by our own code
    assert (summary.sent, summary.failed, summary.invalid) == (3, 0, 0)
    assert all(raw.isascii() for raw in raw_messages())
    assert all("=?utf-8?b?" in raw.split("\r\n\r\n", 1)[0] for raw in raw_messages())
    emails = {e.recipients[0]: e for e in sent_emails()}
    names = {a: e.message["To"].addresses[0].display_name for a, e in emails.items()}
    assert names == {
        BEN: "José Núñez",
        "hoa@example.net": "Nguyễn Thị Hoa",
        BROOKE: "Zoë Papadopoulos",
    }
    # and greeted by first name where the CRM has one, else by the whole name
    assert emails[BEN].text.startswith("Hi José,")
    assert "<p>Hi José,</p>" in emails[BEN].html
    assert emails["hoa@example.net"].text.startswith("Hi Nguyễn Thị Hoa,")
    assert emails[BROOKE].text.startswith("Hi Zoë,")
    # and the escalation row names both borrowers in the text and the HTML part
    assert "- APP-1001: José Núñez, Nguyễn Thị Hoa, $2,450.50 due 11/11/2026" in emails[BROOKE].text
    assert "<td>José Núñez, Nguyễn Thị Hoa</td>" in emails[BROOKE].html
