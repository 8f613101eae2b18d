"""`cli import FILE`: a Django dumpdata export mapped onto the contract's items (on moto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from chalicelib.config import Settings
from chalicelib.models import Application, Borrower, Note, Repayment, Staff
from ops.cli import cli
from tests.support import subjects_by_recipient

DUMP = Path(__file__).resolve().parent.parent / "fixtures" / "crm_dumpdata.json"


def invoke(*args: str) -> Result:
    """Run the CLI with the test environment's tables."""
    return CliRunner().invoke(cli, list(args))


def write_dump(folder: Path, records: Any) -> Path:
    path = folder / "dump.json"
    path.write_text(json.dumps(records))
    return path


def test_import_maps_users_borrowers_applications_notes_and_repayments(
    service: Settings,
) -> None:
    # When the fixture dump (21 records, 6 of them broken) is imported
    result = invoke("import", str(DUMP))

    # Then the good records are written, counted per table (BDM 1 is user 1's staff item)
    assert "Imported: 3 staff, 3 borrowers, 3 applications, 1 notes, 1 repayments" in result.stdout
    assert "Skipped: auth.group (1), brokers.broker (1; read for the applications' broker " in (
        result.stdout
    )
    assert "contenttypes.contenttype (1)" in result.stdout

    # Staff: users as user-<pk>; first + last name (or the username) and the email
    olivia = Staff.get("user-1")
    assert (olivia.name, olivia.email) == ("Olivia Harris", "olivia.harris@lender.example.com.au")
    bot = Staff.get("user-3")
    # PynamoDB types a null=True attribute as str; an absent one reads as None.
    assert (bot.name, bot.email) == ("ops-bot", None)  # type: ignore[comparison-overlap]
    assert Borrower.get("11").name == "Noah Wilson"

    # Applications: ids as strings, decimals as numbers, datetimes with an offset
    app = Application.get("100")
    assert app.reference_number == "APP-1001"
    assert app.stage == "valuation_ordered"
    assert app.stage_last_updated == "2026-11-01T23:00:00.123000+00:00"
    assert app.loan_amount == 750000
    assert app.broker_name == "Harbour Finance Brokers"  # the broker FK, resolved in the dump
    assert app.bd_id == "user-1"  # BDM 1 resolves to its user
    assert app.borrower_ids == ["10", "11"]
    naive = Application.get("101")
    assert naive.stage_last_updated == "2026-11-09T09:00:00+11:00"  # USE_TZ=False: Sydney time
    assert naive.loan_amount is None
    assert naive.broker_name == "Coastal Mortgage Co"  # a broker given by name
    assert Application.get("102").loan_amount == 480000.5
    assert Application.get("102").broker_name is None

    # Notes and repayments
    note = Note.get("500")
    assert (note.remind_date, note.application_id, note.created_by) == (
        "2026-11-23",
        "100",
        "user-2",
    )
    assert note.created_at == "2026-11-01T22:00:00+00:00"
    repayment = Repayment.get("900")
    assert (repayment.application_id, repayment.amount) == ("100", 2450.5)
    assert (repayment.due_date, repayment.paid_date) == ("2026-11-30", None)
    assert repayment.reminder_sent is False


def test_import_reports_each_broken_record_and_exits_1(service: Settings) -> None:
    result = invoke("import", str(DUMP))

    # Each failure names the record's index, model, pk and the reason
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("Failed: ")]
    assert failed == [
        "Failed: record 13 (applications.application pk=103): bd ['olivia'] is a natural key "
        "(not supported: export without --natural-foreign)",
        "Failed: record 15 (documents.note pk=501): remind_date 'next Tuesday' is not a "
        "YYYY-MM-DD date",
        "Failed: record 17 (documents.repayment pk=901): amount 'abc' is not a number",
        "Failed: record 18 (documents.repayment pk=902): reminder_sent 'yes' is not true or false",
        "Failed: record 19 (documents.repayment pk=None): no usable pk (natural primary keys "
        "are not supported: export without --natural-primary)",
        'Failed: record 20 (? pk=None): not a dumpdata record (no "model")',
    ]
    assert (
        "Warning: record 12 (applications.application pk=102): broker 99 is not among the dump's "
        in (result.stderr)
    )
    assert result.stderr.rstrip().endswith("Error: 6 of 21 record(s) could not be imported")
    assert "Traceback" not in result.output
    # and the broken records are not written
    assert Note.count() == 1
    assert Repayment.count() == 1


def test_imported_items_are_what_the_checks_read(service: Settings) -> None:
    # Given the dump imported
    invoke("import", str(DUMP))

    # When the note reminder and repayment checks run on 23 Nov 2026 (12:00 Sydney)
    with freeze_time("2026-11-23T01:00:00Z"):
        notes = invoke("run", "note_reminders")
        repayments = invoke("run", "repayment_reminders")

    # Then the note's author and the application's BDM are reminded, and both
    # borrowers of application 100 are told of repayment 900 (due in 7 days)
    assert notes.exit_code == 0, notes.output
    assert repayments.exit_code == 0, repayments.output
    assert subjects_by_recipient() == {
        "chloe.nguyen@lender.example.com.au": ["Note Reminder: Call the valuer"],
        "olivia.harris@lender.example.com.au": ["Note Reminder: Call the valuer"],
        "emma.wilson@example.net": ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"],
        "noah.wilson@example.net": ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"],
    }


def test_a_clean_import_exits_0_and_a_dated_field_keeps_its_business_date(
    service: Settings, tmp_path: Path
) -> None:
    dump = write_dump(
        tmp_path,
        [
            {
                "model": "users.user",
                "pk": "b7c1",
                "fields": {
                    "first_name": "Sam",
                    "last_name": "Author",
                    "email": "sam@example.com.au",
                },
            },
            {
                "model": "documents.note",
                "pk": 7,
                # a DateTimeField remind date: 23 Nov 21:30 UTC is 24 Nov in Sydney
                "fields": {
                    "title": "T",
                    "remind_date": "2026-11-23T21:30:00Z",
                    "created_by": "b7c1",
                },
            },
        ],
    )

    result = invoke("import", str(dump))

    assert result.exit_code == 0, result.output
    assert "Imported: 1 staff, 0 borrowers, 0 applications, 1 notes, 0 repayments" in result.stdout
    assert Staff.get("user-b7c1").name == "Sam Author"
    assert Note.get("7").remind_date == "2026-11-24"
    assert Note.get("7").created_by == "user-b7c1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not a JSON file"),
        ('{"model": "documents.note"}', "expected a JSON list of records, got a JSON dict"),
    ],
)
def test_a_file_that_is_not_a_dump_is_a_usage_error(
    service: Settings, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "dump.json"
    path.write_text(content)

    result = invoke("import", str(path))

    assert result.exit_code == 2
    assert message in result.output
    assert Staff.count() == 0


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"model": "documents.note", "pk": 1}, '"fields" is missing or not an object'),
        (
            {"model": "documents.note", "pk": 1, "fields": {"title": ["a"]}},
            "title ['a'] is not text",
        ),
        (
            {"model": "documents.note", "pk": 1, "fields": {"application": 1.5}},
            "application 1.5 is not a primary key",
        ),
        (
            {"model": "applications.application", "pk": 1, "fields": {"borrowers": 7}},
            "borrowers 7 is not a list of primary keys",
        ),
        (
            {"model": "applications.application", "pk": 1, "fields": {"borrowers": [["Ben"]]}},
            "borrowers holds natural keys (not supported: export without --natural-foreign)",
        ),
        (
            {"model": "applications.application", "pk": 1, "fields": {"borrowers": [None]}},
            "borrowers entry None is not a primary key",
        ),
        (
            {"model": "applications.application", "pk": 1, "fields": {"broker": {"id": 1}}},
            "broker {'id': 1} is neither a broker id nor a name",
        ),
        (
            {"model": "applications.application", "pk": 1, "fields": {"loan_amount": True}},
            "loan_amount True is not a number",
        ),
        (
            {"model": "applications.application", "pk": 1, "fields": {"loan_amount": "NaN"}},
            "loan_amount 'NaN' is not a number",
        ),
        (
            {
                "model": "applications.application",
                "pk": 1,
                "fields": {"stage_last_updated": 1700000000},
            },
            "stage_last_updated 1700000000 is not an ISO-8601 datetime",
        ),
        (
            {
                "model": "applications.application",
                "pk": 1,
                "fields": {"stage_last_updated": "last week"},
            },
            "stage_last_updated 'last week' is not an ISO-8601 datetime",
        ),
        (
            {"model": "documents.repayment", "pk": 1, "fields": {"due_date": "2026-02-30"}},
            "due_date '2026-02-30' is not a YYYY-MM-DD date",
        ),
        ({"model": "borrowers.borrower", "pk": "", "fields": {}}, "no usable pk"),
    ],
)
def test_each_unusable_value_is_named_in_the_error(
    aws: None, tmp_path: Path, record: dict[str, Any], reason: str
) -> None:
    result = invoke("import", str(write_dump(tmp_path, [record])))

    assert result.exit_code == 1
    assert f"Failed: record 0 ({record['model']} pk={record['pk']!r}): {reason}" in result.stderr


def test_broker_names_come_from_the_dumps_broker_records(service: Settings, tmp_path: Path) -> None:
    dump = write_dump(
        tmp_path,
        [
            {"model": "brokers.broker", "pk": 1, "fields": {"company_name": "Blue Gum Lending"}},
            {
                "model": "brokers.broker",
                "pk": 2,
                "fields": {"first_name": "Jo", "last_name": "Bloggs"},
            },
            {"model": "brokers.broker", "pk": 3, "fields": None},
            {"model": "applications.application", "pk": 1, "fields": {"broker": 1}},
            {"model": "applications.application", "pk": 2, "fields": {"broker": "2"}},
            {"model": "applications.application", "pk": 3, "fields": {"broker": 3}},
            {"model": "applications.application", "pk": 5, "fields": {"broker": ""}},
        ],
    )

    result = invoke("import", str(dump))

    assert result.exit_code == 0, result.output
    names = {a.id: a.broker_name for a in Application.batch_get(["1", "2", "3", "5"])}
    assert names == {"1": "Blue Gum Lending", "2": "Jo Bloggs", "3": None, "5": None}


def test_a_missing_file_is_a_usage_error(service: Settings, tmp_path: Path) -> None:
    result = invoke("import", str(tmp_path / "missing.json"))

    assert result.exit_code == 2
    assert "does not exist" in result.output
