"""``documents.Note`` and ``documents.Repayment`` (the one with reminder flags)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Note(models.Model):
    """A note; ``remind_date`` is a DateTimeField (stored in UTC)."""

    title = models.CharField(max_length=200)
    content = models.TextField(blank=True)
    remind_date = models.DateTimeField(null=True, blank=True)
    application = models.ForeignKey(
        "applications.Application",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="notes",
    )
    borrower = models.ForeignKey(
        "borrowers.Borrower", null=True, blank=True, on_delete=models.CASCADE, related_name="notes"
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_notes",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="created_notes",
    )
    created_at = models.DateTimeField(auto_now_add=True)


class Repayment(models.Model):
    """A scheduled repayment and the reminder flags the CRM's tasks set."""

    application = models.ForeignKey(
        "applications.Application", on_delete=models.CASCADE, related_name="repayments"
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    due_date = models.DateField()
    paid_date = models.DateField(null=True, blank=True)
    reminder_sent = models.BooleanField(default=False)
    overdue_3_day_sent = models.BooleanField(default=False)
    overdue_7_day_sent = models.BooleanField(default=False)
    overdue_10_day_sent = models.BooleanField(default=False)
