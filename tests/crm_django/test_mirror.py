"""The mirror app keeps DynamoDB in step with a running CRM (Django models, on moto)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from django.apps import apps
from django.db import transaction
from django.test import override_settings
from freezegun import freeze_time

from chalicelib.config import Settings
from chalicelib.models import (
    LOOK_AT_NEXT_RUN,
    NOTES_PENDING,
    REPAYMENTS_PENDING,
    Application,
    Borrower,
    Note,
    Repayment,
    Staff,
)
from ops.cli import cli
from tests.crm_django.crm_data import build_crm
from tests.crm_django.test_real_fixture import dump_everything

TABLES = (Staff, Borrower, Application, Note, Repayment)


def model(label: str) -> Any:
    return apps.get_model(label)


def items(table: Any) -> dict[str, dict[str, Any]]:
    return {item.id: item.attribute_values for item in table.scan()}


def snapshot() -> list[dict[str, dict[str, Any]]]:
    return [items(table) for table in TABLES]


@pytest.fixture
def crm(crm_db: None, tables: Settings) -> None:
    """The fixture's data set, created through the models with the mirror running."""
    with freeze_time("2026-11-20T00:00:00Z"):
        build_crm()


def test_the_mirror_writes_exactly_what_an_import_of_the_crms_export_writes(
    crm: None, tmp_path: Path
) -> None:
    # Given the CRM built through its models, mirrored as it went
    mirrored = snapshot()
    assert [len(table) for table in mirrored] == [7, 4, 4, 4, 5]

    # When the CRM's own export of that database is imported over it
    out = tmp_path / "crm.json"
    out.write_text(json.dumps(dump_everything(tmp_path)))
    result = CliRunner().invoke(cli, ["import", "--prune", str(out)])

    # Then nothing changes: same items, same ids, nothing to prune
    assert result.exit_code == 0, result.output
    assert "Pruned: nothing" in result.stdout
    assert snapshot() == mirrored


def test_changes_are_written_when_the_transaction_commits_and_never_on_rollback(
    crm: None,
) -> None:
    note = model("documents.Note")
    with transaction.atomic():
        note.objects.create(pk=600, title="Committed", created_by_id=2)
        assert "600" not in items(Note)  # not before the commit
    assert Note.get("600").title == "Committed"
    assert Note.get("600").created_by == "user-2"

    def failed_request() -> None:
        with transaction.atomic():
            note.objects.create(pk=601, title="Rolled back")
            raise RuntimeError("the CRM's request failed")

    with pytest.raises(RuntimeError):
        failed_request()
    assert "601" not in items(Note)


def test_a_portal_users_new_email_reaches_their_borrower_and_staff_items(crm: None) -> None:
    emma = model("users.User").objects.get(pk=5)
    emma.email = "emma.new@example.net"
    emma.save()

    assert Borrower.get("1").email == "emma.new@example.net"
    assert Staff.get("user-5").email == "emma.new@example.net"


def test_a_bdm_given_a_user_moves_its_applications_to_that_users_staff_item(crm: None) -> None:
    # Given Sam (BDM 3, no user) gets a login: user 4's account
    sam = model("brokers.BDM").objects.get(pk=3)
    sam.user_id = 4
    sam.save()

    # Then his application points at user-4, named after the BDM, and bdm-3 is gone
    assert Application.get("101").bd_id == "user-4"
    assert Staff.get("user-4").name == "Sam Field"
    assert Staff.get("user-4").email == "chloe.nguyen@lender.example.com.au"  # the user's email
    assert "bdm-3" not in items(Staff)


def test_the_borrowers_of_an_application_follow_both_sides_of_the_m2m(crm: None) -> None:
    app100 = model("applications.Application").objects.get(pk=100)
    priya = model("borrowers.Borrower").objects.get(pk=4)

    app100.borrowers.remove(2)
    assert Application.get("100").borrower_ids == ["1"]

    priya.applications.add(app100)
    assert Application.get("100").borrower_ids == ["1", "4"]

    priya.applications.clear()
    assert Application.get("100").borrower_ids == ["1"]
    assert Application.get("102").borrower_ids == []

    app100.borrowers.clear()
    assert Application.get("100").borrower_ids == []


def test_deletes_remove_the_items_and_update_what_pointed_at_them(crm: None) -> None:
    model("documents.Note").objects.get(pk=503).delete()
    assert "503" not in items(Note)

    # an application takes its notes and repayments with it (cascade)
    model("applications.Application").objects.get(pk=102).delete()
    assert "102" not in items(Application)
    assert "502" not in items(Note)
    assert "902" not in items(Repayment)

    # a BDM without a user: its staff item goes, its application loses its BDM
    model("brokers.BDM").objects.get(pk=3).delete()
    assert "bdm-3" not in items(Staff)
    assert "bd_id" not in items(Application)["101"]

    # a portal user: the staff item goes, the borrower keeps no email
    model("users.User").objects.get(pk=5).delete()
    assert "user-5" not in items(Staff)
    assert "email" not in items(Borrower)["1"]

    # a BDM with a user: the user's staff item stays, named after the user again
    model("brokers.BDM").objects.get(pk=2).delete()
    assert Staff.get("user-3").name == "Michael Chen"
    assert "bd_id" not in items(Application)["103"]


def test_the_mirror_never_clears_a_flag_the_service_set(crm: None) -> None:
    # Given the service sent repayment 900's upcoming reminder
    Repayment(id="900").update(actions=[Repayment.reminder_sent.set(True)])

    # When the CRM edits the repayment (its own flag still false)
    repayment = model("documents.Repayment").objects.get(pk=900)
    repayment.amount = Decimal("2500.00")
    repayment.save()

    # Then the amount follows and the flag stays set
    item = Repayment.get("900")
    assert (item.amount, item.reminder_sent) == (2500, True)


def test_a_note_or_repayment_written_is_marked_pending_and_a_paid_one_is_not(crm: None) -> None:
    # Then each note with a remind date is in the note check's pending index, each
    # unpaid repayment in the repayment check's (to be looked at by the next run)
    notes = items(Note)
    assert {k: v.get("pending_check") for k, v in notes.items()} == {
        "500": NOTES_PENDING,
        "501": NOTES_PENDING,
        "502": NOTES_PENDING,
        "503": None,
    }
    marks = {
        k: (v.get("pending_check"), v.get("next_notice_on")) for k, v in items(Repayment).items()
    }
    assert marks["900"] == (REPAYMENTS_PENDING, LOOK_AT_NEXT_RUN)
    assert marks["904"] == (None, None)  # paid

    # When repayment 900 is paid in the CRM
    repayment = model("documents.Repayment").objects.get(pk=900)
    repayment.paid_date = repayment.due_date
    repayment.save()

    # Then it leaves the index
    assert "pending_check" not in items(Repayment)["900"]
    assert "next_notice_on" not in items(Repayment)["900"]


def test_an_application_given_a_new_bdm_marks_its_notes_pending_again(crm: None) -> None:
    # Given note 501 (on application 101) whose reminders all went out: out of the index
    Note(id="501").update(actions=[Note.pending_check.remove()])

    # When the CRM gives application 101 to another BDM
    app101 = model("applications.Application").objects.get(pk=101)
    app101.bd_id = 2
    app101.save()

    # Then the note is pending again, so the next run reminds the new BDM
    assert Note.get("501").pending_check == NOTES_PENDING


def test_a_dynamodb_failure_is_logged_and_never_fails_the_crms_save(
    crm: None, caplog: pytest.LogCaptureFixture
) -> None:
    Note.delete_table()

    with caplog.at_level(logging.ERROR):
        model("documents.Note").objects.create(pk=700, title="Saved anyway", created_by_id=2)

    assert model("documents.Note").objects.filter(pk=700).exists()
    assert "notes (table test-notes): could not write 700 from record 0 (documents.note" in (
        caplog.text
    )


def test_table_names_come_from_the_crms_settings_before_the_environment(
    crm: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the CRM names the notes table in CRM_MIRROR and the environment names none
    monkeypatch.delenv("NOTES_TABLE")
    note = model("documents.Note")
    with override_settings(CRM_MIRROR={"NOTES_TABLE": "test-notes"}):
        note.objects.create(pk=800, title="Configured in settings", created_by_id=2)
    assert Note.get("800").title == "Configured in settings"

    # and without either, the save still succeeds and the log names the missing setting
    with caplog.at_level(logging.ERROR):
        note.objects.create(pk=801, title="Not configured", created_by_id=2)
    assert note.objects.filter(pk=801).exists()
    assert "crm_mirror: set NOTES_TABLE in CRM_MIRROR or the environment" in caplog.text
