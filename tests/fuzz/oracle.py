"""The fuzz's oracle: what a sent message may look like, and what a world must lead to.

Independent of ``chalicelib``: messages are judged from the raw MIME moto's SES
captured (parsed with the standard library), the HTML part against the tags and
attributes the templates themselves contain, and outcomes against the expectations
each case carried when it was drawn (:mod:`tests.fuzz.strategies`).
"""

from __future__ import annotations

import email
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, fields
from email.message import EmailMessage, Message
from email.policy import compat32, default
from email.utils import getaddresses
from functools import cache
from html.parser import HTMLParser
from pathlib import Path

from chalicelib.run import RunSummary
from ops.demo import LENDER_ENVIRONMENT
from tests.fuzz.strategies import DOMAIN, Case
from tests.support import TOP_LEVEL_HEADERS

TEMPLATES = Path(__file__).resolve().parents[2] / "chalicelib" / "templates"
MAX_LINE = 998
# How long a reported id and reason may be (the shortened text and an ellipsis).
REPORTED_ID_CHARS = 100
REPORTED_REASON_CHARS = 300
VOID_TAGS = frozenset({"meta", "br", "img", "hr", "input", "link", "col", "area", "base", "wbr"})


@dataclass(frozen=True)
class Sent:
    """One message as SES accepted it: its raw text and the addresses it was sent to."""

    raw: str
    destinations: list[str]


class _Tags(HTMLParser):
    """Every tag, attribute, comment and declaration of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, list[str]]] = []
        self.ends: list[str] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, [name for name, _ in attrs]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        self.ends.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.ends.append(tag)

    def handle_comment(self, data: str) -> None:
        self.other.append(f"comment {data[:40]!r}")

    def handle_pi(self, data: str) -> None:
        self.other.append(f"processing instruction {data[:40]!r}")

    def unknown_decl(self, data: str) -> None:
        self.other.append(f"declaration {data[:40]!r}")


def parse_html(html: str) -> _Tags:
    """The tags of ``html``, parsed with :mod:`html.parser`."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser


@cache
def template_markup() -> dict[str, frozenset[str]]:
    """``{tag: attribute names}`` of every element the HTML templates themselves contain."""
    allowed: dict[str, set[str]] = {}
    for path in sorted(TEMPLATES.glob("*.html")):
        for tag, attrs in parse_html(path.read_text(encoding="utf-8")).starts:
            allowed.setdefault(tag, set()).update(attrs)
    return {tag: frozenset(attrs) for tag, attrs in allowed.items()}


# Bidi marks, embeddings, overrides and isolates, and the byte-order mark.
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


def _unsafe_char(char: str) -> bool:
    # Controls (C0, DEL, C1), line and paragraph separators, surrogates, bidi controls.
    return unicodedata.category(char) in ("Cc", "Zl", "Zp", "Cs") or char in BIDI


def injection_problems(sent: Sent) -> list[str]:
    """Why a message's headers or recipients are not exactly the ones the service sets."""
    problems: list[str] = []
    head = sent.raw.replace("\r\n", "\n").split("\n\n", 1)[0]
    names = [line.split(":", 1)[0].lower() for line in head.split("\n") if line[:1] not in " \t"]
    if names != TOP_LEVEL_HEADERS:
        problems.append(f"top-level headers are {names[:8]}")
    written = email.message_from_string(sent.raw, policy=compat32)
    decoded = email.message_from_string(sent.raw, policy=default)
    for name in ("Cc", "Bcc", "Resent-To", "Sender"):
        if written.get_all(name) or decoded.get_all(name):
            problems.append(f"has a {name} header")
    replies = [addr for _, addr in getaddresses(written.get_all("Reply-To", []))]
    if replies != [LENDER_ENVIRONMENT["LENDER_REPLY_TO"]]:
        problems.append("Reply-To is not the lender's own address")
    written_to = [addr for _, addr in getaddresses(written.get_all("To", []))]
    to_header = decoded["To"]
    decoded_to = [a.addr_spec for a in to_header.addresses] if to_header is not None else []
    if len(written.get_all("To", [])) != 1 or len(written_to) != 1:
        problems.append(f"To holds {len(written_to)} addresses")
    elif decoded_to != written_to:
        problems.append("To decodes to other addresses than written")
    elif not written_to[0].lower().endswith(("@" + DOMAIN, "." + DOMAIN)):
        problems.append("To is not one of the CRM's addresses")
    if [d.lower() for d in sent.destinations] != [a.lower() for a in written_to[:1]]:
        problems.append(f"SES was asked to deliver to {len(sent.destinations)} other addresses")
    return problems


def safety_problems(sent: Sent) -> list[str]:
    """Why a message is not 7-bit clean, has long lines, control text or foreign HTML."""
    problems: list[str] = []
    if not sent.raw.isascii():
        problems.append("not 7-bit clean")
    lines = sent.raw.split("\r\n")
    if any("\r" in line or "\n" in line for line in lines):
        problems.append("bare CR or LF")
    if any(len(line) > MAX_LINE for line in lines):
        problems.append(f"a line over {MAX_LINE} characters")
    message = email.message_from_string(sent.raw, policy=default)
    assert isinstance(message, EmailMessage)
    subject = str(message["Subject"] or "")
    if any(_unsafe_char(c) for c in subject):
        problems.append("control or bidi character in the Subject")
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    if html is None or text is None:
        return [*problems, "no text and HTML alternatives"]
    problems.extend(html_problems(html))
    return problems


def html_problems(part: Message) -> list[str]:
    """Elements, attributes, comments or unbalanced tags the templates did not put there."""
    assert isinstance(part, EmailMessage)
    parsed = parse_html(str(part.get_content()))
    allowed = template_markup()
    problems = [f"HTML has a {what}" for what in parsed.other]
    for tag, attrs in parsed.starts:
        if tag not in allowed:
            problems.append(f"HTML has a <{tag}> element")
        elif extra := set(attrs) - allowed[tag]:
            problems.append(f"HTML <{tag}> has attributes {sorted(extra)}")
    starts = Counter(tag for tag, _ in parsed.starts if tag not in VOID_TAGS)
    ends = Counter(tag for tag in parsed.ends if tag not in VOID_TAGS)
    if starts != ends:
        problems.append("HTML start and end tags do not balance")
    return problems


@dataclass
class Tally:
    """What the fuzz found, added up over worlds."""

    worlds: int = 0
    items: int = 0
    hostile: int = 0
    valid: int = 0
    messages: int = 0
    emails_expected: int = 0
    reports_expected: int = 0
    reports_found: int = 0
    failed_expected: int = 0
    crashes: int = 0
    missed: int = 0
    unexpected: int = 0
    unreported: int = 0
    duplicate_reports: int = 0
    false_reports: int = 0
    untruncated: int = 0
    injections: int = 0
    unsafe: int = 0
    hostile_by_table: Counter[str] = field(default_factory=Counter)
    cases_by_label: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        """Add another tally (one world's) to this one."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, list):
                mine.extend(theirs[: max(0, 20 - len(mine))])
            else:
                setattr(self, f.name, mine + theirs)

    def note(self, problem: str) -> None:
        """Keep a few problems to show."""
        if len(self.examples) < 20:
            self.examples.append(problem)

    @property
    def failures(self) -> int:
        """Everything that makes the fuzz fail."""
        return (
            self.crashes
            + self.missed
            + self.unexpected
            + self.unreported
            + self.duplicate_reports
            + self.false_reports
            + self.untruncated
            + self.injections
            + self.unsafe
        )


def _matches(reported: str, item_id: str) -> bool:
    """The id as reported: itself, or a prefix of it ending in an ellipsis."""
    if reported == item_id:
        return True
    return reported.endswith("…") and item_id.startswith(reported[:-1])


# Long because every promise the fuzz checks is one short block here, judged on the same world;
# split, each part would need the whole world passed again.
def judge(
    world: list[Case],
    summaries: list[RunSummary],
    crashes: list[str],
    sent: list[Sent],
    failed_addresses: set[str],
) -> Tally:
    """Hold one world's runs to what its cases expected."""
    tally = Tally(worlds=1, crashes=len(crashes), messages=len(sent))
    for crash in crashes:
        tally.note(f"crash: {crash}")
    for case in world:
        tally.cases_by_label[case.label] += 1
        for item in case.items:
            tally.items += 1
            if item.hostile:
                tally.hostile += 1
                tally.hostile_by_table[item.table] += 1
            else:
                tally.valid += 1

    # Messages: headers and recipients, then safety, then who got what.
    actual: list[tuple[str, str]] = []
    for message in sent:
        if problems := injection_problems(message):
            tally.injections += 1
            tally.note(f"injection: {problems}")
        if problems := safety_problems(message):
            tally.unsafe += 1
            tally.note(f"unsafe: {problems}")
        decoded = email.message_from_string(message.raw, policy=default)
        to = [addr for _, addr in getaddresses(decoded.get_all("To", []))]
        actual.append(((to or message.destinations or [""])[0].lower(), str(decoded["Subject"])))
    expected = [e for case in world for e in case.expect.emails]
    tally.emails_expected = len(expected)
    for address, prefix, mark in expected:
        found = next(
            (
                i
                for i, (to, subject) in enumerate(actual)
                if to == address.lower() and subject.startswith(prefix) and mark in subject
            ),
            None,
        )
        if found is None:
            tally.missed += 1
            tally.note(f"missed: {prefix}{mark} to {address}")
        else:
            actual.pop(found)
    tally.unexpected = len(actual)
    silent = {a.lower() for case in world for a in case.expect.silent}
    for address, subject in actual[:3]:
        why = "an address that must get nothing" if address in silent else address
        tally.note(f"unexpected: {subject[:60]!r} to {why}")

    # Reports: every bad item once by its (shortened) id with a reason, and nothing else.
    reported = [(entry["item_id"], entry["reason"]) for s in summaries for entry in s.invalid_items]
    wanted = {item_id for case in world for item_id in case.expect.reports}
    tally.reports_expected = len(wanted)
    for item_id in wanted:
        if any(_matches(r, item_id) and reason for r, reason in reported):
            tally.reports_found += 1
        else:
            tally.unreported += 1
            tally.note(f"unreported: {item_id[:60]!r}")
    for r, reason in reported:
        # Reports are for people and logs: a 2 KB id or a page-long reason is shortened.
        if len(r) > REPORTED_ID_CHARS + 1 or len(reason) > REPORTED_REASON_CHARS + 1:
            tally.untruncated += 1
            tally.note(
                f"report not shortened: {len(r)}-character id, {len(reason)}-character reason"
            )
    for (r, reason), count in Counter(reported).items():
        if count > 1:
            tally.duplicate_reports += count - 1
            tally.note(f"reported {count} times: {r[:60]!r} {reason[:60]!r}")
        if not any(_matches(r, item_id) for item_id in wanted):
            tally.false_reports += 1
            tally.note(f"reported but valid: {r[:60]!r} {reason[:80]!r}")
    for case in world:
        for address in case.expect.failed:
            tally.failed_expected += 1
            if address.lower() not in failed_addresses:
                tally.unreported += 1
                tally.note(f"unsendable not recorded as failed: {address[:60]!r}")
    return tally
