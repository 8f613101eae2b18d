"""``brokers.BDM`` and ``brokers.Broker``."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class BDM(models.Model):
    """A business development manager; the CRM's tasks email ``bdm.user.email``."""

    name = models.CharField(max_length=100)
    email = models.EmailField(null=True, blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )


class Broker(models.Model):
    """A mortgage broker who introduces applications."""

    name = models.CharField(max_length=100)
    company = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
