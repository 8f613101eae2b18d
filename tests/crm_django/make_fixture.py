"""Write tests/fixtures/crm_real_dumpdata.json the way the CRM would: a whole-database dumpdata.

Run from the repository root: ``.venv/bin/python -m tests.crm_django.make_fixture``.
"""

from __future__ import annotations

from pathlib import Path

from freezegun import freeze_time

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "crm_real_dumpdata.json"


def main() -> None:
    """Build the data set in an in-memory CRM and dump the whole database."""
    from tests.crm_django import configure

    configure(mirror=False)
    from django.core.management import call_command

    from tests.crm_django.crm_data import build_crm

    with freeze_time("2026-11-20T00:00:00Z"):  # auto_now / auto_now_add fields
        build_crm()
    call_command("dumpdata", indent=2, output=str(FIXTURE), verbosity=0)


if __name__ == "__main__":
    main()
