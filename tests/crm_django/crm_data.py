"""The CRM data set of the real-shape fixture, built through the CRM's own models.

Dated for a run on Monday 23 Nov 2026 (Sydney). What each record is for:

* users 1-6; BDM 1 and 2 have users (2: Olivia, 3: Michael; BDM 2's own email is stale),
  BDM 3 (Sam) has none. User pk 3 and BDM pk 3 are different people.
* borrower 1 is a portal borrower (email on user 5 only), 2 and 4 are not, 3 is a
  company (Acme Holdings) reached through its portal user 6.
* applications 100 (stale 14 days, Olivia), 101 (stale 21 days, Sam), 102 (fresh,
  Michael), 103 (settled).
* notes: 500 reminds at 2026-11-22T14:00Z (23 Nov in Sydney, 22 Nov in UTC), 501 is
  Michael's note on Sam's application, 502 reminds at 2026-11-23T14:00Z (24 Nov in
  Sydney), 503 has no reminder.
* repayments (documents): 900 due in 7 days, 901 3 days overdue, 902 10 days overdue,
  903 7 days overdue but already notified by the CRM, 904 paid. Two legacy
  (applications) repayments that must not be imported.
* unrelated: a group, a session, an admin log entry (plus contenttypes, permissions).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session


def _model(label: str) -> Any:
    return apps.get_model(label)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Long because it is data: the whole real-shape CRM, created in one transaction, read
# against the expectations of test_crm_migration.py.
def build_crm() -> None:
    """Create the data set (into an empty database)."""
    user, bdm, broker = _model("users.User"), _model("brokers.BDM"), _model("brokers.Broker")
    borrower, application = _model("borrowers.Borrower"), _model("applications.Application")
    note, repayment = _model("documents.Note"), _model("documents.Repayment")
    legacy = _model("applications.Repayment")
    joined = _utc("2026-01-05 00:00")

    def make_user(pk: int, username: str, first: str, last: str, email: str, role: str) -> Any:
        return user.objects.create(
            pk=pk,
            username=username,
            first_name=first,
            last_name=last,
            email=email,
            role=role,
            password="!fixture",  # unusable: nobody logs in with a fixture
            date_joined=joined,
        )

    make_user(1, "alice", "Alice", "Admin", "alice.admin@lender.example.com.au", "admin")
    olivia = make_user(2, "olivia", "Olivia", "Harris", "olivia.harris@lender.example.com.au", "bd")
    michael = make_user(3, "michael", "Michael", "Chen", "michael.chen@lender.example.com.au", "bd")
    make_user(4, "chloe", "Chloe", "Nguyen", "chloe.nguyen@lender.example.com.au", "staff")
    emma_user = make_user(5, "emma.w", "Emma", "Wilson", "emma.wilson@example.net", "client")
    acme_user = make_user(6, "acme", "Raj", "Patel", "accounts@acme-holdings.example.com", "client")

    bdm_olivia = bdm.objects.create(pk=1, name="Olivia Harris", email=None, user=olivia)
    bdm_michael = bdm.objects.create(
        pk=2, name="Michael Chen", email="m.chen.old@lender.example.com.au", user=michael
    )
    bdm_sam = bdm.objects.create(pk=3, name="Sam Field", email="sam.field@lender.example.com.au")
    harbour = broker.objects.create(
        pk=1,
        name="Harbour Finance Brokers",
        company="Harbour Finance Pty Ltd",
        email="deals@harbour.example.com.au",
    )

    emma = borrower.objects.create(pk=1, first_name="Emma", last_name="Wilson", user=emma_user)
    noah = borrower.objects.create(
        pk=2, first_name="Noah", last_name="Wilson", email="noah.wilson@example.net"
    )
    acme = borrower.objects.create(
        pk=3,
        first_name="Raj",
        last_name="Patel",
        is_company=True,
        company_name="Acme Holdings Pty Ltd",
        user=acme_user,
    )
    priya = borrower.objects.create(
        pk=4, first_name="Priya", last_name="Patel", email="priya.patel@example.net"
    )

    def make_application(pk: int, ref: str, stage: str, since: str, amount: str, bd: Any) -> Any:
        return application.objects.create(
            pk=pk,
            reference_number=ref,
            stage=stage,
            stage_last_updated=_utc(since),
            loan_amount=Decimal(amount),
            bd=bd,
            broker=harbour,
        )

    app100 = make_application(
        100, "APP-1001", "valuation_ordered", "2026-11-09 01:00", "750000.00", bdm_olivia
    )
    app100.borrowers.set([emma, noah])
    app101 = make_application(
        101, "APP-1002", "more_info_required", "2026-11-02 01:00", "1200000.00", bdm_sam
    )
    app101.borrowers.set([acme])
    app102 = make_application(
        102, "APP-1003", "inquiry", "2026-11-20 01:00", "480000.50", bdm_michael
    )
    app102.borrowers.set([priya])
    app103 = make_application(
        103, "APP-1004", "settled", "2026-09-01 01:00", "300000.00", bdm_michael
    )
    app103.borrowers.set([noah])

    note.objects.create(
        pk=500,
        title="Call the valuer",
        content="Chase the valuation report.",
        remind_date=_utc("2026-11-22 14:00"),
        application=app100,
        created_by_id=4,
        assigned_to=olivia,
    )
    note.objects.create(
        pk=501,
        title="Company financials",
        content="Ask Acme for the FY26 accounts.",
        remind_date=_utc("2026-11-23 03:00"),
        application=app101,
        created_by=michael,
    )
    note.objects.create(
        pk=502,
        title="Settlement booking",
        content="Book settlement.",
        remind_date=_utc("2026-11-23 14:00"),
        application=app102,
        created_by=michael,
    )
    note.objects.create(
        pk=503, title="No reminder", content="", application=app100, created_by=olivia
    )

    def make_repayment(pk: int, app: Any, due: date, **extra: Any) -> None:
        repayment.objects.create(
            pk=pk, application=app, amount=Decimal("2450.50"), due_date=due, **extra
        )

    make_repayment(900, app100, date(2026, 11, 30))
    make_repayment(901, app101, date(2026, 11, 20))
    make_repayment(
        902,
        app102,
        date(2026, 11, 13),
        reminder_sent=True,
        overdue_3_day_sent=True,
        overdue_7_day_sent=True,
    )
    make_repayment(
        903,
        app100,
        date(2026, 11, 16),
        reminder_sent=True,
        overdue_3_day_sent=True,
        overdue_7_day_sent=True,
    )
    make_repayment(904, app103, date(2026, 11, 30), paid_date=date(2026, 11, 20))
    legacy.objects.create(
        pk=1, application=app100, amount=Decimal("2450.50"), due_date=date(2026, 11, 30)
    )
    legacy.objects.create(
        pk=2, application=app102, amount=Decimal("99.00"), due_date=date(2026, 11, 16)
    )

    Group.objects.create(pk=1, name="BDMs").user_set.add(olivia, michael)
    Session.objects.create(
        session_key="fixturesession0000000000000000001",
        session_data="e30:fixture",
        expire_date=_utc("2026-12-01 00:00"),
    )
    LogEntry.objects.create(
        action_time=_utc("2026-11-20 00:00"),
        user=michael,
        content_type=ContentType.objects.get_for_model(application),
        object_id="102",
        object_repr="APP-1003",
        action_flag=ADDITION,
        change_message="[]",
    )
