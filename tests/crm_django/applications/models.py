"""``applications.Application`` and the legacy ``applications.Repayment``."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

STAGES = [
    ("inquiry", "Inquiry"),
    ("sent_to_lender", "Sent to Lender"),
    ("funding_table_issued", "Funding Table Issued"),
    ("iloo_issued", "ILOO Issued"),
    ("iloo_signed", "ILOO Signed"),
    ("commitment_fee_paid", "Commitment Fee Paid"),
    ("app_submitted", "App Submitted"),
    ("valuation_ordered", "Valuation Ordered"),
    ("valuation_received", "Valuation Received"),
    ("more_info_required", "More Info Required"),
    ("formal_approval", "Formal Approval"),
    ("loan_docs_instructed", "Loan Docs Instructed"),
    ("loan_docs_issued", "Loan Docs Issued"),
    ("loan_docs_signed", "Loan Docs Signed"),
    ("settlement_conditions", "Settlement Conditions"),
    ("settled", "Settled"),
    ("closed", "Closed"),
    ("declined", "Declined"),
    ("withdrawn", "Withdrawn"),
]


class Application(models.Model):
    """A loan application; ``bd`` is a BDM, not a user."""

    reference_number = models.CharField(max_length=50, unique=True)
    stage = models.CharField(max_length=50, choices=STAGES, default="inquiry")
    stage_last_updated = models.DateTimeField(default=timezone.now)
    loan_amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    bd = models.ForeignKey(
        "brokers.BDM", null=True, blank=True, on_delete=models.SET_NULL, related_name="applications"
    )
    broker = models.ForeignKey(
        "brokers.Broker",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="applications",
    )
    borrowers = models.ManyToManyField("borrowers.Borrower", related_name="applications")
    updated_at = models.DateTimeField(auto_now=True)


class Repayment(models.Model):
    """The legacy repayment schedule, without reminder flags (not imported)."""

    application = models.ForeignKey(
        Application, on_delete=models.CASCADE, related_name="legacy_repayments"
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    due_date = models.DateField()
    paid_date = models.DateField(null=True, blank=True)
