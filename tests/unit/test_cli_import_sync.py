"""`cli import` against real DynamoDB semantics: clashes, write errors, upserts, --prune."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from mypy_boto3_sesv2 import SESV2Client

from chalicelib.config import Settings
from chalicelib.models import Application, Borrower, CrmModel, Note, Repayment, Staff
from ops.cli import cli
from tests.support import run, sent_emails, sydney

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "crm_real_dumpdata.json"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def real_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(FIXTURE.read_text())
    return records


def write_dump(folder: Path, records: list[Any], name: str = "dump.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(records))
    return path


def ids(model: type[CrmModel]) -> list[str]:
    return sorted(item.id for item in model.scan())


def user(pk: int, email: str) -> dict[str, Any]:
    fields = {"username": f"u{pk}", "first_name": "", "last_name": "", "email": email}
    return {"model": "users.user", "pk": pk, "fields": fields}


def test_two_records_for_one_key_are_an_error_naming_both_and_neither_is_written(
    service: Settings, tmp_path: Path
) -> None:
    # Given user 1 twice, and two BDMs that both claim user 2
    dump = write_dump(
        tmp_path,
        [
            user(1, "first@example.com"),
            user(1, "second@example.com"),
            user(2, "two@example.com"),
            {"model": "brokers.bdm", "pk": 7, "fields": {"name": "A", "email": None, "user": 2}},
            {"model": "brokers.bdm", "pk": 8, "fields": {"name": "B", "email": None, "user": 2}},
            user(3, "three@example.com"),
        ],
    )

    # When it is imported
    result = invoke("import", str(dump))

    # Then each clash is reported with both records and the table, and only user 3 is written
    assert result.exit_code == 1
    assert (
        "Failed: record 1 (users.user pk=1): clashes with record 0 (users.user pk=1) on staff "
        "item 'user-1' (table test-staff): two source records, one key; neither is written"
    ) in result.stderr
    assert (
        "Failed: record 4 (brokers.bdm pk=8): clashes with record 3 (brokers.bdm pk=7) on staff "
        "item 'user-2' (table test-staff)"
    ) in result.stderr
    assert "Imported: 1 staff," in result.stdout
    assert ids(Staff) == ["user-3"]


def test_a_file_without_any_crm_model_exits_1_and_says_how_to_export(
    service: Settings, tmp_path: Path
) -> None:
    unrelated = [r for r in real_records() if r["model"].startswith(("auth.", "contenttypes."))]

    result = invoke("import", str(write_dump(tmp_path, unrelated)))

    assert result.exit_code == 1
    assert "holds none of the CRM's models (users.user, brokers.bdm, " in result.stderr
    assert "python manage.py dumpdata users brokers borrowers applications documents" in (
        result.stderr
    )
    assert "Imported" not in result.stdout


def test_a_failed_write_names_the_table_and_its_records_and_the_rest_is_written(
    service: Settings, tmp_path: Path
) -> None:
    # Given the notes table is missing
    Note.delete_table()

    result = invoke("import", str(FIXTURE))

    assert result.exit_code == 1
    assert "Failed: notes (table test-notes): could not write 500 from record " in result.stderr
    assert "(documents.note pk=500); 501 from record " in result.stderr
    assert "ResourceNotFoundException" in result.stderr
    assert "Imported: 7 staff, 4 borrowers, 4 applications, 0 notes, 5 repayments" in result.stdout
    assert result.stderr.rstrip().endswith("Error: 1 write(s) failed")


def test_a_dry_run_writes_nothing(service: Settings) -> None:
    result = invoke("import", "--dry-run", "--prune", str(FIXTURE))

    assert result.exit_code == 0, result.output
    assert "Would import: 7 staff, 4 borrowers, 4 applications, 4 notes, 5 repayments" in (
        result.stdout
    )
    assert "Would prune: nothing" in result.stdout
    assert ids(Staff) == []


def test_prune_deletes_what_the_crm_deleted_and_reports_it(
    service: Settings, tmp_path: Path
) -> None:
    # Given the export imported, and then BDM 3 (Sam), user 1 and note 503 deleted in the CRM
    assert invoke("import", str(FIXTURE)).exit_code == 0
    gone = {("brokers.bdm", 3), ("users.user", 1), ("documents.note", 503)}
    later = [r for r in real_records() if (r["model"], r["pk"]) not in gone]
    for record in later:  # Sam's application lost its BDM with him (on_delete=SET_NULL)
        if record["model"] == "applications.application" and record["fields"]["bd"] == 3:
            record["fields"]["bd"] = None

    # When the new export is imported with --prune
    result = invoke("import", "--prune", str(write_dump(tmp_path, later)))

    # Then the deleted items are gone and listed
    assert result.exit_code == 0, result.output
    assert "Pruned: staff bdm-3, staff user-1, notes 503" in result.stdout
    assert ids(Staff) == ["user-2", "user-3", "user-4", "user-5", "user-6"]
    assert ids(Note) == ["500", "501", "502"]


def test_prune_leaves_alone_the_tables_whose_source_models_are_not_in_the_dump(
    service: Settings, tmp_path: Path
) -> None:
    assert invoke("import", str(FIXTURE)).exit_code == 0
    notes_only = [r for r in real_records() if r["model"] == "documents.note" and r["pk"] != 503]

    result = invoke("import", "--prune", str(write_dump(tmp_path, notes_only)))

    assert result.exit_code == 0, result.output
    assert "Pruned: notes 503" in result.stdout
    assert "Not pruned (a source model is missing from the dump or a record failed): staff, " in (
        result.stdout
    )
    assert len(ids(Staff)) == 7
    assert len(ids(Repayment)) == 5


def test_a_reimport_updates_crm_fields_and_never_clears_a_flag(
    service: Settings, tmp_path: Path
) -> None:
    # Given a paid repayment imported, whose flags this service then set
    fields = {"application": 1, "amount": "10.00", "due_date": "2026-11-30"}
    paid = {**fields, "paid_date": "2026-11-29", "reminder_sent": False, "overdue_3_day_sent": True}
    invoke(
        "import",
        str(write_dump(tmp_path, [{"model": "documents.repayment", "pk": 9, "fields": paid}])),
    )
    Repayment(id="9").update(actions=[Repayment.reminder_sent.set(True)])

    # When the CRM's record (payment reversed, every flag false) is imported again
    unpaid = {**fields, "amount": "12.50", "paid_date": None, "reminder_sent": False}
    unpaid["overdue_3_day_sent"] = False
    result = invoke(
        "import",
        str(write_dump(tmp_path, [{"model": "documents.repayment", "pk": 9, "fields": unpaid}])),
    )

    # Then the CRM's fields are updated, the paid date removed, and no true flag cleared
    assert result.exit_code == 0, result.output
    item = Repayment.get("9")
    # PynamoDB types a null=True attribute as str; an absent one reads as None.
    assert (item.amount, item.paid_date) == (12.5, None)  # type: ignore[comparison-overlap]
    assert (item.reminder_sent, item.overdue_3_day_sent) == (True, True)
    assert (item.overdue_7_day_sent, item.overdue_10_day_sent) == (False, False)


def test_records_pointing_outside_a_partial_export_fall_back_with_a_warning(
    service: Settings, tmp_path: Path
) -> None:
    # Given an export of brokers, borrowers and applications only (no users app)
    dump = write_dump(
        tmp_path,
        [
            {
                "model": "brokers.bdm",
                "pk": 1,
                "fields": {"name": "Olivia", "email": "o@x.example", "user": 9},
            },
            {"model": "borrowers.borrower", "pk": 1, "fields": {"email": "b@x.example", "user": 9}},
            {"model": "applications.application", "pk": 1, "fields": {"bd": 2, "borrowers": [1]}},
        ],
    )

    result = invoke("import", str(dump))

    # Then each falls back to the record's own data, and says so
    assert result.exit_code == 0, result.output
    assert (Staff.get("user-9").name, Staff.get("user-9").email) == ("Olivia", "o@x.example")
    assert Borrower.get("1").email == "b@x.example"
    assert Application.get("1").bd_id is None
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert warnings == [
        "Warning: record 0 (brokers.bdm pk=1): user '9' is not among the dump's users.user "
        "records; its staff item 'user-9' has the BDM's own name and email",
        "Warning: record 1 (borrowers.borrower pk=1): user '9' is not among the dump's "
        "users.user records; the record's own email is used",
        "Warning: record 2 (applications.application pk=1): bd '2' is not among the dump's "
        "brokers.bdm records; imported without a BDM",
    ]


def test_applications_imported_after_the_days_stale_sweep_are_alerted_at_the_next_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given the stale check ran on Wednesday on an empty CRM
    run("stale_applications", sydney("2026-11-25 12:00"), ses)

    # When the CRM's export is imported, with applications in their stage since 02/11 and 09/11
    assert invoke("import", str(FIXTURE)).exit_code == 0

    # Then the next run that day alerts them, though they were stale before that sweep
    run("stale_applications", sydney("2026-11-25 13:00"), ses)
    subjects = [e.subject for e in sent_emails()]
    assert subjects
    assert all(s.startswith("Stale Application Alert") for s in subjects)
