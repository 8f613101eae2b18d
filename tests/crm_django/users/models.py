"""``users.User``: the CRM's custom user model (there is no ``auth.user`` table)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models

ROLES = [
    ("admin", "Admin"),
    ("bd", "Business Development"),
    ("broker", "Broker"),
    ("client", "Client"),
    ("staff", "Staff"),
]


class User(AbstractUser):
    """A CRM login: staff, BDMs, brokers and portal borrowers alike."""

    email = models.EmailField(unique=True)
    role = models.CharField(max_length=20, choices=ROLES, default="staff")
    phone = models.CharField(max_length=20, blank=True)
