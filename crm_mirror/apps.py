"""The mirror's app config: connects the signal handlers."""

from __future__ import annotations

from django.apps import AppConfig


class CrmMirrorConfig(AppConfig):
    """``crm_mirror``: mirrors the CRM's reminder data to DynamoDB."""

    name = "crm_mirror"
    verbose_name = "Reminder service mirror"

    def ready(self) -> None:
        """Connect the save, delete and M2M handlers to the six models."""
        from crm_mirror import sync

        sync.connect()
