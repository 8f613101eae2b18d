"""Benchmarks (``make bench``, not part of ``make test``): time and peak memory of a run.

On moto these measure the service's own work plus moto's, not AWS latency; they
are for comparing changes on one machine, so they assert nothing about speed.
The request counts that matter are pinned by tests/unit/tasks/test_request_patterns.py.
"""

from __future__ import annotations

import tracemalloc
from datetime import date, timedelta

import pytest
from mypy_boto3_sesv2 import SESV2Client
from pytest_benchmark.fixture import BenchmarkFixture

from chalicelib.config import Settings
from chalicelib.models import (
    NOTES_PENDING,
    REPAYMENTS_PENDING,
    Application,
    Borrower,
    Note,
    Repayment,
    Staff,
)
from tests.support import run, sydney

AT = sydney("2026-11-23 12:00")
TODAY = date(2026, 11, 23)
APPLICATIONS = 300
BDMS = 20


@pytest.fixture
def large_crm(service: Settings) -> None:
    """300 applications (a third stale), 300 notes (half due), 300 repayments over 40 days."""
    with Staff.batch_write() as staff, Borrower.batch_write() as borrowers:
        for n in range(BDMS):
            staff.save(Staff(id=f"bdm-{n}", name=f"BDM {n}", email=f"bdm{n}@lender.example.com"))
        for n in range(APPLICATIONS):
            borrowers.save(
                Borrower(id=f"bor-{n}", name=f"Borrower {n}", email=f"borrower{n}@example.net")
            )
    with (
        Application.batch_write() as apps,
        Note.batch_write() as notes,
        Repayment.batch_write() as repayments,
    ):
        for n in range(APPLICATIONS):
            changed = TODAY - timedelta(days=n % 45)
            apps.save(
                Application(
                    id=f"app-{n}",
                    reference_number=f"APP-{n:04d}",
                    stage="valuation_ordered",
                    stage_last_updated=f"{changed.isoformat()}T10:00:00+11:00",
                    loan_amount=500_000,
                    broker_name="Harbour Finance Brokers",
                    bd_id=f"bdm-{n % BDMS}",
                    borrower_ids=[f"bor-{n}"],
                )
            )
            notes.save(
                Note(
                    id=f"note-{n}",
                    title=f"Note {n}",
                    content="Follow up.",
                    remind_date=(TODAY - timedelta(days=n % 6)).isoformat(),
                    application_id=f"app-{n}",
                    created_by=f"bdm-{(n + 1) % BDMS}",
                    pending_check=NOTES_PENDING,
                )
            )
            repayments.save(
                Repayment(
                    id=f"rep-{n}",
                    application_id=f"app-{n}",
                    amount=2450.5,
                    due_date=(TODAY - timedelta(days=n % 40 - 10)).isoformat(),
                    pending_check=REPAYMENTS_PENDING,
                    next_notice_on=TODAY.isoformat(),
                )
            )


def _peak_memory_kib(check: str, ses: SESV2Client) -> int:
    """Peak Python memory of one more run (traced apart: tracing slows a run severalfold)."""
    tracemalloc.start()
    try:
        run(check, AT, ses)
        return tracemalloc.get_traced_memory()[1] // 1024
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("check", ["stale_applications", "note_reminders", "repayment_reminders"])
def test_bench_first_run_sends_everything_due(
    benchmark: BenchmarkFixture, large_crm: None, ses: SESV2Client, check: str
) -> None:
    summary = benchmark.pedantic(run, args=(check, AT, ses), rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"emails_sent": summary.emails_sent, "items_read": summary.items_read}
    )
    assert summary.emails_sent > 0


@pytest.mark.parametrize("check", ["stale_applications", "note_reminders", "repayment_reminders"])
def test_bench_hourly_rerun_with_everything_delivered(
    benchmark: BenchmarkFixture, large_crm: None, ses: SESV2Client, check: str
) -> None:
    run(check, AT, ses)
    summary = benchmark.pedantic(run, args=(check, AT, ses), rounds=5, iterations=1)
    benchmark.extra_info.update(
        {"items_read": summary.items_read, "peak_memory_kib": _peak_memory_kib(check, ses)}
    )
    assert summary.emails_sent == 0
