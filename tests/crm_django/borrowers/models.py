"""``borrowers.Borrower``: people, or companies (``is_company``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Borrower(models.Model):
    """A borrower; portal borrowers have their email only on their user."""

    first_name = models.CharField(max_length=100, null=True, blank=True)
    last_name = models.CharField(max_length=100, null=True, blank=True)
    email = models.EmailField(null=True, blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    is_company = models.BooleanField(default=False)
    company_name = models.CharField(max_length=200, null=True, blank=True)
