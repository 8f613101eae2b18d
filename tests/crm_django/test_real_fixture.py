"""The real-shape fixture is what the CRM's own models dump, and loads back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management import call_command
from freezegun import freeze_time

from chalicelib.config import Settings
from tests.crm_django.crm_data import build_crm
from tests.crm_django.make_fixture import FIXTURE


def dump_everything(tmp_path: Path) -> list[dict[str, object]]:
    out = tmp_path / "dump.json"
    call_command("dumpdata", indent=2, output=str(out), verbosity=0)
    records: list[dict[str, object]] = json.loads(out.read_text())
    return records


def test_the_fixture_loads_into_the_crms_models_and_dumps_back_unchanged(
    crm_db: None, tables: Settings, tmp_path: Path
) -> None:
    # Given the checked-in export, When it is loaded into the CRM's models
    call_command("loaddata", str(FIXTURE), verbosity=0)

    # Then a whole-database dumpdata gives it back record for record
    assert dump_everything(tmp_path) == json.loads(FIXTURE.read_text())


def test_the_fixture_is_what_the_data_set_dumps_to(
    crm_db: None, tables: Settings, tmp_path: Path
) -> None:
    # Given the data set built through the models (as make_fixture.py does)
    with freeze_time("2026-11-20T00:00:00Z"):
        build_crm()

    # Then dumping it reproduces the checked-in fixture (regenerate it with make_fixture.py)
    assert dump_everything(tmp_path) == json.loads(FIXTURE.read_text())


def test_the_fixture_has_every_shape_the_migration_must_handle() -> None:
    records = json.loads(FIXTURE.read_text())
    labels = {r["model"] for r in records}
    by_model = {label: [r for r in records if r["model"] == label] for label in labels}

    assert {"contenttypes.contenttype", "auth.permission", "sessions.session"} <= labels
    assert {"admin.logentry", "auth.group", "brokers.broker"} <= labels
    assert len(by_model["users.user"]) >= 3
    bdm_users = [r["fields"]["user"] for r in by_model["brokers.bdm"]]
    assert None in bdm_users
    assert any(u is not None for u in bdm_users)
    borrowers = [r["fields"] for r in by_model["borrowers.borrower"]]
    assert any(b["user"] and not b["email"] for b in borrowers)  # portal: email on the user
    assert any(b["user"] is None and b["email"] for b in borrowers)
    assert any(b["is_company"] for b in borrowers)
    assert "applications.repayment" in labels
    assert "documents.repayment" in labels
    reminds = [r["fields"]["remind_date"] for r in by_model["documents.note"]]
    assert "2026-11-23T14:00:00Z" in reminds  # 23 Nov in UTC, 24 Nov in Sydney
