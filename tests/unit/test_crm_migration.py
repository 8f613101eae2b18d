"""Migrating from the real CRM: its whole-database dumpdata imported, then the three checks.

The fixture (tests/fixtures/crm_real_dumpdata.json) was made by Django from models
with the CRM's field definitions (tests/crm_django). Every recipient below is what
the CRM's own tasks would pick: ``bd.user.email`` (else the BDM's email), the note's
``created_by`` user, ``borrower.user.email`` (else the borrower's email).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from chalicelib.config import Settings
from chalicelib.models import Application, Borrower, CrmModel, Note, Repayment, Staff
from ops.cli import cli
from tests.support import run, sent_emails, subjects_by_recipient, sydney

pytestmark = [pytest.mark.task, pytest.mark.integration]

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "crm_real_dumpdata.json"
AT = sydney("2026-11-23 12:00")

OLIVIA = "olivia.harris@lender.example.com.au"  # user 2, BDM 1
MICHAEL = "michael.chen@lender.example.com.au"  # user 3, BDM 2 (whose own email is stale)
CHLOE = "chloe.nguyen@lender.example.com.au"  # user 4, a note author
SAM = "sam.field@lender.example.com.au"  # BDM 3, no user
EMMA = "emma.wilson@example.net"  # portal borrower: the email is on user 5 only
NOAH = "noah.wilson@example.net"
ACME = "accounts@acme-holdings.example.com"  # company borrower, through its portal user 6


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def items(model: type[CrmModel]) -> dict[str, dict[str, Any]]:
    """Every item of a table, as attribute dicts by id (a test may Scan)."""
    return {item.id: item.attribute_values for item in model.scan()}


def test_the_real_export_imports_without_overwriting_anyone(service: Settings) -> None:
    # When the CRM's whole-database export is imported
    result = invoke("import", str(FIXTURE))

    # Then the counts are of items written, one id space per source model
    assert result.exit_code == 0, result.output
    assert "Imported: 7 staff, 4 borrowers, 4 applications, 4 notes, 5 repayments" in result.stdout
    assert "applications.repayment (2; legacy model without reminder flags" in result.stdout
    assert "auth.permission (52)" in result.stdout
    assert "sessions.session (1)" in result.stdout
    staff = items(Staff)
    assert staff == {
        "user-1": {
            "id": "user-1",
            "name": "Alice Admin",
            "first_name": "Alice",
            "email": "alice.admin@lender.example.com.au",
        },
        # A user's own first name, also when its BDM record gives the name
        "user-2": {
            "id": "user-2",
            "name": "Olivia Harris",
            "first_name": "Olivia",
            "email": OLIVIA,
        },
        "user-3": {
            "id": "user-3",
            "name": "Michael Chen",
            "first_name": "Michael",
            "email": MICHAEL,
        },
        "user-4": {"id": "user-4", "name": "Chloe Nguyen", "first_name": "Chloe", "email": CHLOE},
        "user-5": {"id": "user-5", "name": "Emma Wilson", "first_name": "Emma", "email": EMMA},
        "user-6": {"id": "user-6", "name": "Raj Patel", "first_name": "Raj", "email": ACME},
        # A BDM without a user has a name only: no first name is guessed from it
        "bdm-3": {"id": "bdm-3", "name": "Sam Field", "email": SAM},
    }
    borrowers = {
        b: (v.get("name"), v.get("first_name"), v.get("email")) for b, v in items(Borrower).items()
    }
    assert borrowers == {
        "1": ("Emma Wilson", "Emma", EMMA),
        "2": ("Noah Wilson", "Noah", NOAH),
        # a company has no first name
        "3": ("Acme Holdings Pty Ltd", None, ACME),
        "4": ("Priya Patel", "Priya", "priya.patel@example.net"),
    }
    bd_ids = {a: v.get("bd_id") for a, v in items(Application).items()}
    assert bd_ids == {"100": "user-2", "101": "bdm-3", "102": "user-3", "103": "user-3"}
    assert Application.get("100").broker_name == "Harbour Finance Brokers"
    # remind_date is a UTC DateTimeField: its Sydney date is the business date
    notes = {n: (v.get("remind_date"), v.get("created_by")) for n, v in items(Note).items()}
    assert notes == {
        "500": ("2026-11-23", "user-4"),  # 2026-11-22T14:00Z is 01:00 on 23 Nov in Sydney
        "501": ("2026-11-23", "user-3"),
        "502": ("2026-11-24", "user-3"),  # 2026-11-23T14:00Z is 01:00 on 24 Nov in Sydney
        "503": (None, "user-2"),
    }
    assert sorted(items(Repayment)) == ["900", "901", "902", "903", "904"]


def test_the_checks_reach_exactly_whom_the_crms_data_names(service: Settings) -> None:
    # Given the CRM's export imported
    assert invoke("import", str(FIXTURE)).exit_code == 0

    # When the three checks run at 12:00 Sydney on Monday 23 Nov 2026
    for check in ("stale_applications", "note_reminders", "repayment_reminders"):
        run(check, AT)

    # Then every notice goes to the person the CRM's own rules name
    assert subjects_by_recipient() == {
        # stale: APP-1001 (14 days) to BDM 1 through its user; APP-1002 (21 days) to BDM 3
        OLIVIA: ["Stale Application Alert: APP-1001", "Note Reminder: Call the valuer"],
        SAM: ["Stale Application Alert: APP-1002", "Note Reminder: Company financials"],
        # note 500: author Chloe (user 4) and the BDM of APP-1001; note 501: its author
        # Michael (user 3, not BDM 3) and Sam (BDM 3); note 502 is due on 24 Nov in Sydney
        CHLOE: ["Note Reminder: Call the valuer"],
        MICHAEL: [
            "Note Reminder: Company financials",
            # repayment 902, to BDM 2's user
            "ESCALATION: 10 Days Overdue Repayment: APP-1003",
        ],
        # repayment 900 (due in 7 days): both borrowers, Emma through her portal user
        EMMA: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"],
        NOAH: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"],
        # repayment 901 (3 days overdue): the company, through its portal user
        ACME: ["OVERDUE Repayment Notice: APP-1002, 3 days overdue"],
    }
    acme = next(e for e in sent_emails() if e.recipients == [ACME])
    assert acme.text.startswith("Hi Acme Holdings Pty Ltd,")
    # people are greeted by the first name the CRM has for them
    emma = next(e for e in sent_emails() if e.recipients == [EMMA])
    assert emma.text.startswith("Hi Emma,\r\n")
    michael = next(e for e in sent_emails() if e.recipients == [MICHAEL])
    assert michael.text.startswith("Hi Michael,\r\n")
    escalation = next(e for e in sent_emails() if e.subject.startswith("ESCALATION"))
    assert "Priya Patel" in escalation.text
    assert "m.chen.old@" not in json.dumps([e.recipients for e in sent_emails()])


def test_a_reimport_changes_nothing_and_keeps_the_flags_the_service_set(
    service: Settings,
) -> None:
    # Given the export imported and the repayment check run (it sets flags)
    assert invoke("import", str(FIXTURE)).exit_code == 0
    run("repayment_reminders", AT)
    before = [items(m) for m in (Staff, Borrower, Application, Note, Repayment)]
    assert before[4]["900"]["reminder_sent"] is True  # set by this service, false in the CRM

    # When the same export is imported again
    result = invoke("import", str(FIXTURE))

    # Then every table is as it was, no flag cleared, but for the pending marks: an
    # import marks each unpaid repayment to be looked at by the next run
    assert result.exit_code == 0, result.output
    after = [items(m) for m in (Staff, Borrower, Application, Note, Repayment)]
    assert after[:4] == before[:4]
    assert {k: v["reminder_sent"] for k, v in after[4].items()} == {
        k: v["reminder_sent"] for k, v in before[4].items()
    }
    # and running the check again sends nothing new, and puts them back where they were
    sent = len(sent_emails())
    run("repayment_reminders", AT)
    assert len(sent_emails()) == sent
    assert items(Repayment) == before[4]
