"""Hypothesis strategies for hostile CRM worlds, each item with what it must lead to.

A world is a list of independent cases. Each case is a small cluster of items (an
application with its BDM, a note with its author and application, a repayment with
its application and borrowers, sometimes a ledger entry) with ids of its own, so the
expected outcome of every case is known when it is drawn: the emails it must cause
(recipient, subject prefix, a marker the subject must carry), the item ids that must
be reported as invalid, and the addresses whose notice must fail permanently.

The expectations come from the rules in the README, not from ``chalicelib``: this
module builds raw DynamoDB items (written with the low-level client, so attributes
can have the wrong DynamoDB type) and never calls the project's own parsing or
classification.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from hypothesis import strategies as st

# The business date every world is checked on (a Monday), at noon in Sydney.
TODAY = date(2026, 11, 23)
DOMAIN = "fuzz.example"
EVIL = "evil.example"

TABLES = ("staff", "borrowers", "applications", "notes", "repayments", "notifications")

# The stages of the README; the checks query the active ones.
ACTIVE_STAGES = (
    "inquiry",
    "sent_to_lender",
    "funding_table_issued",
    "iloo_issued",
    "iloo_signed",
    "commitment_fee_paid",
    "app_submitted",
    "valuation_ordered",
    "valuation_received",
    "more_info_required",
    "formal_approval",
    "loan_docs_instructed",
    "loan_docs_issued",
    "loan_docs_signed",
    "settlement_conditions",
)

# Pieces of hostile text: encoded words that decode to a header or an address, raw
# line breaks, control characters (C0, NUL, DEL, C1), bidi and separator characters,
# HTML and template syntax, and non-ASCII text of every width.
FRAGMENTS: tuple[str, ...] = (
    f"=?utf-8?q?x=0D=0ABcc:_attacker@{EVIL}?=",
    f"=?UTF-8?Q?=0D=0ACc:_attacker@{EVIL}?=",
    "=?utf-8?b?ZXZpbEBldmlsLmV4YW1wbGU+LA==?=",
    f"=?utf-8?q?Evil_<attacker@{EVIL}>,?=",
    f"=?iso-8859-1?q?=0D=0ATo:_attacker@{EVIL}?=",
    "=?utf-8?q?=00=1C=7F?=",
    f"\r\nBcc: attacker@{EVIL}",
    f"\nCc: attacker@{EVIL}\n",
    "\r\n\r\n--boundary\r\nContent-Type: text/html\r\n\r\n<b>x</b>",
    f'Sam" <attacker@{EVIL}>, "x',
    f"<attacker@{EVIL}>",
    "\x00",
    "\x1c",
    "\x7f",
    "\x85",
    "\x9b",
    "\x0b\x0c",
    "\r",
    "\u202e",
    "\u202dtxt.exe\u202c",
    "\u2066",
    "\u2069",
    "\u200f",
    "\u2028",
    "\u2029",
    "\ufeff",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    '<a href="javascript:alert(1)">click</a>',
    "</td></tr></table>",
    "<!-- comment -->",
    '"><svg onload=alert(1)>',
    '<p data-fuzz="1">',
    "<xfuzz>",
    "&amp;&lt;&#x3c;",
    "{{ 7*7 }}{% if %}",
    "Zoë Ünïcödé ✓",
    "李小龙",
    "مرحبا بالعالم",
    "🙂👩‍👩‍👧",
    "e\u0301\u0338",
    "\t",
    "%s%n",
    " " * 40,
    "x" * 120,
)

# How many times a drawn text is repeated: mostly short, sometimes huge.
REPEATS = (1, 1, 1, 1, 2, 3, 40, 300)


@dataclass
class Item:
    """One raw DynamoDB item for a table; ``hostile`` when it carries hostile data."""

    table: str
    raw: dict[str, Any]
    hostile: bool


@dataclass
class Expect:
    """What one case must lead to after the three checks have run."""

    # (recipient address, subject prefix, marker the subject must contain or "")
    emails: list[tuple[str, str, str]] = field(default_factory=list)
    # Item ids that must each be reported in a summary's invalid_items.
    reports: list[str] = field(default_factory=list)
    # Addresses whose notice must be recorded as failed (it cannot be built) and not sent.
    failed: list[str] = field(default_factory=list)
    # Addresses that must get nothing at all (any message is unexpected; named in reports).
    silent: list[str] = field(default_factory=list)


@dataclass
class Case:
    """A cluster of items with its expected outcome."""

    label: str
    items: list[Item]
    expect: Expect


@dataclass
class Person:
    """A staff member or borrower as a case draws it, and how it must be treated."""

    id: str
    items: list[Item]
    # "ok": gets the notice; "bad": its referrer is reported; "missing": dangling id,
    # its referrer is reported; "unsendable": valid-looking address SES cannot take.
    outcome: str
    address: str


def s(value: str) -> dict[str, str]:
    """A DynamoDB string."""
    return {"S": value}


def n(value: str) -> dict[str, str]:
    """A DynamoDB number, as the string DynamoDB carries."""
    return {"N": value}


def marker(case: int) -> str:
    """A token unique to one case, put first in the text its subject shows."""
    return f"ZQ{case:05d}Q"


@st.composite
def hostile_text(draw: st.DrawFn) -> str:
    """Text assembled from hostile fragments and arbitrary unicode, sometimes huge."""
    pieces = draw(
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), min_size=1, max_size=4)
    )
    return "".join(pieces) * draw(st.sampled_from(REPEATS))


@st.composite
def label_text(draw: st.DrawFn) -> tuple[str, bool]:
    """A display text (title, name, reference, broker) and whether it is hostile."""
    if draw(st.booleans()):
        return draw(st.sampled_from(("Call the valuer", "Ben Lee", "APP 1001", "Harbour"))), False
    return draw(hostile_text()), True


# Addresses a person may have that no notice may go to; each one is reported.
BAD_EMAILS: tuple[str, ...] = (
    "not-an-address",
    "",
    "{id}@" + DOMAIN + f"\r\nBcc: attacker@{EVIL}",
    "{id}@" + DOMAIN + f", attacker@{EVIL}",
    f"Evil <attacker@{EVIL}>",
    "=?utf-8?q?attacker=40" + EVIL + "?=",
    "a" * 300 + "@" + DOMAIN,
    "{id}@" + DOMAIN + "\x00",
)
# Addresses that look like addresses but that SES cannot take: the notice must fail.
UNSENDABLE_EMAILS: tuple[str, ...] = (
    "zoë-{id}@" + DOMAIN,
    "a..{id}@" + DOMAIN,
    "l" * 70 + "{id}@" + DOMAIN,
)


@st.composite
def person(draw: st.DrawFn, pid: str, table: str, unsendable: bool = True) -> Person:
    """A staff member or borrower with id ``pid``, healthy or broken in one way."""
    outcomes = (
        ["ok"] * 6 + ["bad"] * 3 + ["missing", "huge"] + (["unsendable"] if unsendable else [])
    )
    outcome = draw(st.sampled_from(outcomes))
    address = f"{pid}@{DOMAIN}"
    name, hostile = draw(label_text())
    raw: dict[str, Any] = {"id": s(pid), "name": s(name), "email": s(address)}
    if outcome == "missing":
        return Person(pid, [], "missing", address)
    if outcome == "huge":
        # A reference over DynamoDB's key limit names no item.
        huge = f"{pid}-" + "x" * 3000
        return Person(huge, [], "missing", address)
    if outcome == "bad":
        how = draw(st.sampled_from(("email", "email", "no-email", "email-type", "name-type")))
        if how == "email":
            raw["email"] = s(draw(st.sampled_from(BAD_EMAILS)).replace("{id}", pid))
        elif how == "no-email":
            del raw["email"]
        elif how == "email-type":
            raw["email"] = draw(st.sampled_from((n("5"), {"L": [s(address)]}, {"BOOL": True})))
        else:
            raw["name"] = draw(st.sampled_from((n("1"), {"M": {"x": s("y")}}, {"SS": ["a", "b"]})))
        return Person(pid, [Item(table, raw, True)], "bad", address)
    if outcome == "unsendable":
        address = draw(st.sampled_from(UNSENDABLE_EMAILS)).replace("{id}", pid)
        raw["email"] = s(address)
        return Person(pid, [Item(table, raw, True)], "unsendable", address)
    odd = draw(st.sampled_from(("", "", "", "+tag", "quote", "upper", "idn")))
    if odd == "+tag":
        address = f"{pid}+tag@{DOMAIN}"
    elif odd == "quote":
        address = f"o'{pid}@{DOMAIN}"
    elif odd == "upper":
        address = f"{pid.upper()}@{DOMAIN.upper()}"
    elif odd == "idn":
        address = f"{pid}@bücher-ünïcödé.{DOMAIN}"
    raw["email"] = s(address)
    return Person(pid, [Item(table, raw, hostile or bool(odd))], "ok", address)


def expect_person(expect: Expect, who: Person, referrer: str, prefix: str, mark: str) -> None:
    """Add what a notice to ``who`` about ``referrer`` must lead to."""
    if who.outcome == "ok":
        expect.emails.append((delivered(who.address), prefix, mark))
    elif who.outcome == "unsendable":
        expect.failed.append(who.address)
    else:
        expect.reports.append(referrer)
        expect.silent.append(who.address)


def delivered(address: str) -> str:
    """The address SES is asked to deliver to: an internationalised domain in ASCII."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.encode('idna').decode('ascii')}"


def long_id(base: str) -> str:
    """An id that fits DynamoDB's 2,048-byte key limit but no ledger key built from it."""
    return f"{base}-" + "é" * ((2046 - len(base)) // 2)


# --- stale applications ------------------------------------------------------------------

GOOD_AMOUNTS = (
    "750000",
    "0.01",
    "-0",
    "999999999999.99",
    "1E-130",
    "12345.675",
    "0.12345678901234567890123456789012345678",
)
ABSURD_AMOUNTS = ("1e26", "-9.99E+125", "1E+125", "123456789012345678901234567890", "1e15")
NOT_NUMBERS = (s("NaN"), s("Infinity"), s("-Infinity"), s("1e26"), {"BOOL": True}, {"NULL": True})
BAD_TIMESTAMPS = (
    "2026-02-30T10:00:00+11:00",
    "2026-10-01T10:00:00",
    "2026-10-01Tgarbage",
    "2026-10-01T10:00:00+11:00" + "x" * 990,  # an index sort key near its 1,024 bytes
    "2026-10-01T10:00:00+11:00\r\nBcc: attacker@evil.example",
    "0001-01-01T00:00:00+14:00",
    "2026-10-01T25:61:00+11:00",
    "2026-10-01T10:00:00+25:00",
)


# Long because each hostile variant of an application is one branch here, drawn in one
# order that hypothesis shrinks; split, the variants would be spread over many strategies.
@st.composite
def stale_case(draw: st.DrawFn, case: int) -> Case:
    """An application in an active stage, stale for 15-60 days, and its BDM."""
    variant = draw(
        st.sampled_from(
            ["valid"] * 8
            + ["absurd_amount", "amount_type", "other_type", "no_reference", "bad_timestamp"]
            + ["no_bd", "long_id"]
        )
    )
    app_id = long_id(f"c{case}-app") if variant == "long_id" else f"c{case}-app"
    mark = marker(case)
    reference, hostile = draw(label_text())
    broker, broker_hostile = draw(label_text())
    days = draw(st.integers(min_value=15, max_value=60))
    bdm = draw(person(f"c{case}-bdm", "staff", unsendable=False))
    raw: dict[str, Any] = {
        "id": s(app_id),
        "reference_number": s(f"{mark} {reference}"),
        "stage": s(draw(st.sampled_from(ACTIVE_STAGES))),
        "stage_last_updated": s(f"{TODAY - timedelta(days=days)}T10:00:00+11:00"),
        "loan_amount": n(draw(st.sampled_from(GOOD_AMOUNTS))),
        "broker_name": s(broker),
        "bd_id": s(bdm.id),
        "borrower_ids": {"L": [s("nobody")]},
    }
    expect = Expect()
    if variant == "valid":
        if draw(st.booleans()):
            del raw["loan_amount"]  # shown as "Not recorded"
        expect_person(expect, bdm, app_id, "Stale Application Alert: ", mark)
    else:
        if variant == "absurd_amount":
            raw["loan_amount"] = n(draw(st.sampled_from(ABSURD_AMOUNTS)))
        elif variant == "amount_type":
            raw["loan_amount"] = draw(st.sampled_from(NOT_NUMBERS[:-1]))
        elif variant == "other_type":
            key = draw(
                st.sampled_from(("reference_number", "broker_name", "bd_id", "borrower_ids"))
            )
            raw[key] = draw(st.sampled_from((n("7"), {"M": {}}, {"BOOL": False}, s("x"))))
            if key == "borrower_ids":
                raw[key] = s("bor-1")
            elif raw[key] == s("x"):
                raw[key] = n("7")
        elif variant == "no_reference":
            del raw["reference_number"]
        elif variant == "bad_timestamp":
            raw["stage_last_updated"] = s(draw(st.sampled_from(BAD_TIMESTAMPS)))
        elif variant == "no_bd":
            del raw["bd_id"]
        expect.reports.append(app_id)
        if bdm.outcome == "ok":
            expect.silent.append(bdm.address)
    items = [Item("applications", raw, variant != "valid" or hostile or broker_hostile), *bdm.items]
    return Case(f"stale:{variant}", items, expect)


# --- note reminders ----------------------------------------------------------------------


def ledger_entry(key: str, item_id: str, address: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as the service writes it, with ``overrides`` (None removes)."""
    at = "2026-11-23T00:30:00.000000+0000"
    raw: dict[str, Any] = {
        "id": s(key),
        "kind": s("note_reminders"),
        "item_id": s(item_id),
        "recipient_id": s(address.split("@")[0]),
        "recipient_email": s(address),
        "business_date": s(TODAY.isoformat()),
        "status": s("sent"),
        "run_id": s("earlier-run"),
        "attempts": n("1"),
        "created_at": s(at),
        "updated_at": s(at),
        "claimed_at": s(at),
        "lease_expires_at": s("2026-11-23T00:45:00.000000+0000"),
        "sent_at": s(at),
        "message_id": s("earlier-message"),
    }
    for name, value in overrides.items():
        if value is None:
            raw.pop(name, None)
        else:
            raw[name] = value
    return raw


# Ways a ledger entry can be unreadable; each must be reported and never sent over.
BROKEN_LEDGER: tuple[dict[str, Any], ...] = (
    {"status": n("1")},
    {"status": None},
    {"created_at": s("not a date")},
    {"attempts": s("many")},
    {"status": s("claimed"), "lease_expires_at": None},
    {"lease_expires_at": {"BOOL": True}},
    {"kind": n("3")},
    {"status": {"L": [s("sent")]}},
)


# Long because each hostile variant of a note is one branch here, drawn in one
# order that hypothesis shrinks; split, the variants would be spread over many strategies.
@st.composite
def note_case(draw: st.DrawFn, case: int) -> Case:
    """A note due today (or up to three days ago), its author and its application's BDM."""
    variant = draw(
        st.sampled_from(
            ["valid"] * 8
            + ["note_type", "dangling_app", "huge_app", "unreadable_app", "nobody", "long_id"]
            + ["broken_ledger"] * 2
            + ["sent_ledger", "ledger_state", "same_person"]
        )
    )
    note_id = long_id(f"c{case}-note") if variant == "long_id" else f"c{case}-note"
    mark = marker(case)
    remind = TODAY - timedelta(days=draw(st.integers(min_value=0, max_value=3)))
    title, hostile = draw(label_text())
    content, content_hostile = draw(label_text())
    author = draw(person(f"c{case}-author", "staff"))
    bdm = draw(person(f"c{case}-bdm", "staff"))
    with_app = variant in ("dangling_app", "huge_app", "unreadable_app") or draw(st.booleans())
    app_id = f"c{case}-app"
    raw: dict[str, Any] = {
        "id": s(note_id),
        "title": s(f"{mark} {title}"),
        "content": s(content),
        "remind_date": s(remind.isoformat()),
        "created_by": s(author.id),
        "created_at": s("2026-11-01T09:00:00+11:00"),
    }
    reference, ref_hostile = draw(label_text())
    app: dict[str, Any] = {
        "id": s(app_id),
        "reference_number": s(reference),
        "stage": s("settled"),
        "stage_last_updated": s("2026-01-05T10:00:00+11:00"),
        "bd_id": s(bdm.id),
    }
    items: list[Item] = []
    expect = Expect()
    prefix = "Note Reminder: "
    if with_app:
        raw["application_id"] = s(app_id)
    if variant == "same_person":
        # The author is also the application's BDM (same id, or same address in
        # another case): each person is reminded once.
        author = Person(f"c{case}-author", [], "ok", f"c{case}-author@{DOMAIN}")
        author.items = [
            Item(
                "staff", {"id": s(author.id), "name": s(title), "email": s(author.address)}, hostile
            )
        ]
        raw["created_by"] = s(author.id)
        raw["application_id"] = s(app_id)
        with_app = True
        if draw(st.booleans()):
            app["bd_id"] = s(author.id)
            bdm = Person(author.id, [], "ok", author.address)
        else:
            twin = f"c{case}-twin"
            bdm = Person(twin, [], "ok", author.address.upper())
            bdm.items = [Item("staff", {"id": s(twin), "email": s(bdm.address)}, False)]
            app["bd_id"] = s(twin)
        expect.emails.append((author.address, prefix, mark))
    elif variant == "ledger_state":
        # A readable entry for the author's notice: sent or failed is done; pending,
        # an unknown outcome past the settling window, or a claim whose lease and
        # window ran out are due again.
        author = Person(f"c{case}-author", [], "ok", f"c{case}-author@{DOMAIN}")
        author.items = [Item("staff", {"id": s(author.id), "email": s(author.address)}, False)]
        raw["created_by"] = s(author.id)
        # Written out, not built by the registry: the fuzz judges the code independently.
        key = f"note_reminders#{note_id}#{remind.isoformat()}#{author.id}"
        status, recent = draw(
            st.sampled_from(
                (
                    ("sent", False),
                    ("failed", False),
                    ("pending", False),
                    ("unknown", False),
                    ("claimed", False),
                    ("unknown", True),
                    ("claimed", True),
                )
            )
        )
        # Recent: a claim of a live run, or an outcome SES's events may still settle.
        when = "2026-11-23T00:55:00.000000+0000" if recent else "2026-11-22T00:30:00.000000+0000"
        lease = "2026-11-23T01:10:00.000000+0000" if recent else when
        overrides: dict[str, Any] = {"status": s(status), "updated_at": s(when)}
        if status == "claimed":
            overrides |= {"claimed_at": s(when), "lease_expires_at": s(lease)}
        items.append(
            Item("notifications", ledger_entry(key, note_id, author.address, overrides), False)
        )
        if status in ("sent", "failed") or recent:
            expect.silent.append(author.address)
        else:
            expect.emails.append((author.address, prefix, mark))
        if with_app:
            expect_person(expect, bdm, note_id, prefix, mark)
    elif variant in ("valid", "broken_ledger", "sent_ledger"):
        if variant != "valid":
            # The author is healthy; the ledger already holds an entry for their notice.
            author = Person(f"c{case}-author", [], "ok", f"c{case}-author@{DOMAIN}")
            name, _ = draw(label_text())
            author.items = [
                Item(
                    "staff",
                    {"id": s(author.id), "name": s(name), "email": s(author.address)},
                    False,
                )
            ]
            raw["created_by"] = s(author.id)
            key = f"note_reminders#{note_id}#{remind.isoformat()}#{author.id}"
            broken = variant == "broken_ledger"
            overrides = draw(st.sampled_from(BROKEN_LEDGER)) if broken else {}
            items.append(
                Item("notifications", ledger_entry(key, note_id, author.address, overrides), broken)
            )
            expect.silent.append(author.address)
            if broken:
                expect.reports.append(key)
        else:
            expect_person(expect, author, note_id, prefix, mark)
        if with_app:
            if author.outcome == "ok" and bdm.outcome == "ok" and draw(st.booleans()):
                app.pop("bd_id")  # no BDM: the author alone
            else:
                expect_person(expect, bdm, note_id, prefix, mark)
    else:
        if variant == "note_type":
            key = draw(st.sampled_from(("title", "content", "created_by", "application_id")))
            raw[key] = draw(st.sampled_from((n("42"), {"L": []}, {"BOOL": True}, {"NULL": True})))
            if raw[key] == {"NULL": True} and key != "title":
                raw[key] = n("42")
            if raw[key] == {"NULL": True}:
                raw[key] = {"M": {}}
        elif variant == "dangling_app":
            with_app = False
        elif variant == "huge_app":
            raw["application_id"] = s(f"{app_id}-" + "x" * 3000)
            with_app = False
        elif variant == "unreadable_app":
            app["loan_amount"] = draw(st.sampled_from(NOT_NUMBERS))
            if app["loan_amount"] == {"NULL": True}:
                app["reference_number"] = n("1001")
        elif variant == "nobody":
            del raw["created_by"]
            app.pop("bd_id")
            raw["application_id"] = s(app_id)
            with_app = True
        expect.reports.append(note_id)
        expect.silent.extend([author.address, bdm.address])
    items.append(Item("notes", raw, variant != "valid" or hostile or content_hostile))
    items.extend(author.items)
    if with_app:
        items.append(Item("applications", app, variant == "unreadable_app" or ref_hostile))
        items.extend(bdm.items)
    return Case(f"note:{variant}", items, expect)


# --- repayment reminders -----------------------------------------------------------------

# d = today - due_date: the window each notice belongs to, and its subject, which
# states the real number of days overdue.
WINDOWS: tuple[tuple[int, int, str, bool], ...] = (
    (-7, 0, "Upcoming Repayment Reminder: ", False),
    (3, 6, "OVERDUE Repayment Notice: ", False),
    (7, 9, "URGENT: {days} Days OVERDUE Repayment: ", False),
    (10, 17, "ESCALATION: {days} Days Overdue Repayment: ", True),
)
FLAGS = ("reminder_sent", "overdue_3_day_sent", "overdue_7_day_sent", "overdue_10_day_sent")
BAD_PAID_DATES = ("2026-02-30", "yesterday", "2026-13-01", "2026-11-2\r\nBcc: x", "0000-00-00")


# Long because each hostile variant of a repayment is one branch here, drawn in one
# order that hypothesis shrinks; split, the variants would be spread over many strategies.
@st.composite
def repayment_case(draw: st.DrawFn, case: int) -> Case:
    """An unpaid repayment in one notice window, its application, borrowers and BDM."""
    variant = draw(
        st.sampled_from(
            ["valid"] * 8
            + ["absurd_amount", "amount_type", "missing_amount", "flag_type", "bad_paid"]
            + ["no_app_id", "dangling_app", "huge_app", "unreadable_app", "no_borrowers"]
            + ["long_id", "paid", "flagged", "between", "listed_twice", "crowd"]
            + ["broken_ledger"] * 2
        )
    )
    rep_id = long_id(f"c{case}-rep") if variant == "long_id" else f"c{case}-rep"
    window = draw(st.integers(min_value=0, max_value=3))
    low, high, subject, to_bdm = WINDOWS[window]
    days = draw(st.integers(min_value=low, max_value=high))
    if variant == "between":
        days = draw(st.sampled_from((1, 2, 18, 30, -8)))
    subject = subject.format(days=days)
    due = (TODAY - timedelta(days=days)).isoformat()
    count = draw(st.integers(min_value=1, max_value=2))
    borrowers = [draw(person(f"c{case}-bor{k}", "borrowers")) for k in range(count)]
    bdm = draw(person(f"c{case}-bdm", "staff", unsendable=False))
    reference, ref_hostile = draw(label_text())
    app_id = f"c{case}-app"
    raw: dict[str, Any] = {
        "id": s(rep_id),
        "application_id": s(app_id),
        "amount": n(draw(st.sampled_from(GOOD_AMOUNTS))),
        "due_date": s(due),
    }
    app: dict[str, Any] = {
        "id": s(app_id),
        "reference_number": s(reference),
        "stage": s("settled"),
        "stage_last_updated": s("2026-01-05T10:00:00+11:00"),
        "bd_id": s(bdm.id),
        "borrower_ids": {"L": [s(b.id) for b in borrowers]},
    }
    expect = Expect()
    everyone = [b.address for b in borrowers] + [bdm.address]
    with_app = True
    if variant == "valid":
        for b in borrowers:
            if to_bdm:
                # Escalations go to the BDM; a broken borrower is still reported.
                if b.outcome in ("bad", "missing"):
                    expect.reports.append(rep_id)
                expect.silent.append(b.address)
            else:
                expect_person(expect, b, rep_id, subject, "")
        if to_bdm:
            expect_person(expect, bdm, rep_id, subject, "")
        else:
            expect.silent.append(bdm.address)
    elif variant == "broken_ledger":
        # An unreadable ledger entry for the first borrower's notice (or the BDM's):
        # reported, and never sent over; everyone else still gets theirs.
        stage = ("upcoming", "overdue_3_day", "overdue_7_day", "overdue_10_day")[window]
        pid = f"c{case}-first"
        first = Person(pid, [], "ok", f"{pid}@{DOMAIN}")
        raw_first = {"id": s(pid), "email": s(first.address)}
        first.items = [Item("staff" if to_bdm else "borrowers", raw_first, False)]
        if to_bdm:
            bdm = first
            app["bd_id"] = s(pid)
        else:
            borrowers[0] = first
            app["borrower_ids"] = {"L": [s(b.id) for b in borrowers]}
        key = f"repayment_reminders#{rep_id}#{due}#{stage}#{first.id}"
        overrides = {"kind": s(f"repayment_{stage}"), **draw(st.sampled_from(BROKEN_LEDGER))}
        ledger = Item("notifications", ledger_entry(key, rep_id, first.address, overrides), True)
        expect.reports.append(key)
        expect.silent.append(first.address)
        for b in borrowers:
            if to_bdm and b.outcome in ("bad", "missing"):
                expect.reports.append(rep_id)
            elif not to_bdm and b is not first:
                expect_person(expect, b, rep_id, subject, "")
    elif variant == "crowd":
        # 150 borrower ids, all but the drawn ones dangling: more keys than one
        # BatchGetItem takes; the dangling ones are reported (once per id).
        ghosts = [s(f"c{case}-ghost{k}") for k in range(150)]
        app["borrower_ids"] = {"L": [*ghosts[:75], *(s(b.id) for b in borrowers), *ghosts[75:]]}
        expect.reports.append(rep_id)
        for b in borrowers:
            if to_bdm:
                expect.silent.append(b.address)
            else:
                expect_person(expect, b, rep_id, subject, "")
        if to_bdm:
            expect_person(expect, bdm, rep_id, subject, "")
    elif variant == "listed_twice":
        # The same borrower listed twice: one notice each, once.
        app["borrower_ids"] = {"L": [s(borrowers[0].id), s(borrowers[0].id)]}
        borrowers = borrowers[:1]
        if to_bdm:
            if borrowers[0].outcome in ("bad", "missing"):
                expect.reports.append(rep_id)
            expect_person(expect, bdm, rep_id, subject, "")
        else:
            expect_person(expect, borrowers[0], rep_id, subject, "")
    elif variant in ("paid", "flagged", "between"):
        if variant == "paid":
            raw["paid_date"] = s((TODAY - timedelta(days=20)).isoformat())
        elif variant == "flagged":
            raw[FLAGS[window]] = {"BOOL": True}
        expect.silent.extend(everyone)
    elif variant == "no_borrowers":
        app["borrower_ids"] = draw(st.sampled_from(({"L": []}, None)))
        if app["borrower_ids"] is None:
            del app["borrower_ids"]
        if to_bdm:
            expect_person(expect, bdm, rep_id, subject, "")
        else:
            expect.reports.append(rep_id)
            expect.silent.append(bdm.address)
        expect.silent.extend(b.address for b in borrowers)
    else:
        if variant == "absurd_amount":
            raw["amount"] = n(draw(st.sampled_from(ABSURD_AMOUNTS)))
        elif variant == "amount_type":
            raw["amount"] = draw(st.sampled_from(NOT_NUMBERS[:-1]))
        elif variant == "missing_amount":
            del raw["amount"]
        elif variant == "flag_type":
            raw[draw(st.sampled_from(FLAGS))] = draw(st.sampled_from((s("yes"), n("1"))))
        elif variant == "bad_paid":
            raw["paid_date"] = s(draw(st.sampled_from(BAD_PAID_DATES)))
        elif variant == "no_app_id":
            del raw["application_id"]
            with_app = False
        elif variant == "dangling_app":
            with_app = False
        elif variant == "huge_app":
            raw["application_id"] = s(f"{app_id}-" + "x" * 3000)
            with_app = False
        elif variant == "unreadable_app":
            app["borrower_ids"] = draw(
                st.sampled_from(
                    (s("bor-1"), n("3"), {"SS": ["a"]}, {"L": [n("1")]}, {"L": [{"M": {}}]})
                )
            )
        expect.reports.append(rep_id)
        expect.silent.extend(everyone)
    benign = ("valid", "paid", "flagged", "between")
    items = [Item("repayments", raw, variant not in benign)]
    if variant == "broken_ledger":
        items.append(ledger)
    if with_app:
        items.append(Item("applications", app, variant == "unreadable_app" or ref_hostile))
        items.extend(item for b in borrowers for item in b.items)
        items.extend(bdm.items)
    return Case(f"repayment:{variant}", items, expect)


@st.composite
def stale_digest_case(draw: st.DrawFn, case: int) -> Case:
    """Two to four stale applications of one BDM, some of them broken: one digest."""
    bdm = draw(person(f"c{case}-bdm", "staff", unsendable=False))
    items: list[Item] = []
    expect = Expect()
    good: list[str] = []
    for k in range(draw(st.integers(min_value=2, max_value=4))):
        app_id = f"c{case}-app{k}"
        mark = f"{marker(case)}{k}"
        reference, hostile = draw(label_text())
        raw: dict[str, Any] = {
            "id": s(app_id),
            "reference_number": s(f"{mark} {reference}"),
            "stage": s(draw(st.sampled_from(ACTIVE_STAGES))),
            "stage_last_updated": s(
                f"{TODAY - timedelta(days=draw(st.integers(15, 90)))}T09:00:00+10:00"
            ),
            "loan_amount": n(draw(st.sampled_from(GOOD_AMOUNTS))),
            "bd_id": s(bdm.id),
        }
        broken = draw(st.sampled_from((False, False, False, True)))
        if broken:
            raw["loan_amount"] = n(draw(st.sampled_from(ABSURD_AMOUNTS)))
            expect.reports.append(app_id)
        elif bdm.outcome == "ok":
            good.append(mark)
        else:
            expect.reports.append(app_id)
        items.append(Item("applications", raw, broken or hostile))
    prefix = "Stale Application Alert: "
    if len(good) == 1:
        expect.emails.append((delivered(bdm.address), prefix, good[0]))
    elif good:
        expect.emails.append((delivered(bdm.address), f"{prefix}{len(good)} applications", ""))
    return Case("stale:digest", [*items, *bdm.items], expect)


@st.composite
def key_collision_case(draw: st.DrawFn, case: int) -> Case:
    """Two notes whose ids, joined with "#" as they are, would give one ledger key."""
    remind = (TODAY - timedelta(days=draw(st.integers(min_value=0, max_value=3)))).isoformat()
    x, y = f"c{case}-x#{remind}#c{case}-y", f"c{case}-y"
    items = [
        Item("staff", {"id": s(x), "email": s(f"c{case}-x@{DOMAIN}")}, True),
        Item("staff", {"id": s(y), "email": s(f"c{case}-y@{DOMAIN}")}, False),
    ]
    expect = Expect()
    for k, (note_id, author) in enumerate(
        ((f"c{case}-n", x), (f"c{case}-n#{remind}#c{case}-x", y))
    ):
        mark = f"{marker(case)}{k}"
        raw = {
            "id": s(note_id),
            "title": s(mark),
            "remind_date": s(remind),
            "created_by": s(author),
        }
        items.append(Item("notes", raw, k == 1))
        expect.emails.append((f"{author.split('#')[0]}@{DOMAIN}", "Note Reminder: ", mark))
    return Case("note:key_collision", items, expect)


CASES = (
    stale_case,
    stale_digest_case,
    note_case,
    note_case,
    repayment_case,
    repayment_case,
    key_collision_case,
)


@st.composite
def worlds(draw: st.DrawFn, cases: int) -> list[Case]:
    """A CRM world of ``cases`` independent cases of the three checks."""
    return [draw(draw(st.sampled_from(CASES))(i)) for i in range(cases)]
