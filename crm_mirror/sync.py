"""Mirror saves and deletes of the CRM's six models to DynamoDB, after commit.

Each change is serialized the way ``manage.py dumpdata`` writes it (Django's
``json`` serializer) together with the records its items depend on (a BDM's
user, a borrower's user, an application's BDM and broker), and then mapped and
written by :mod:`ops.crm_import`, exactly as ``cli import`` does: so a
repayment's ``*_sent`` flags are never cleared, and ids follow the import's id
spaces (``user-<pk>``, ``bdm-<pk>``). A change that affects other items is
followed: a BDM's applications (their ``bd_id``), a user's BDM and borrower
(their name and email), an application's notes that have a remind date (marked
pending again, so a new BDM is reminded too).

Writes happen in ``transaction.on_commit`` callbacks (nothing is written for a
rolled-back transaction) registered as ``robust``: a DynamoDB failure is logged
(logger ``crm_mirror``, and Django's own on_commit error log) and never fails the
CRM's request. Running ``cli import`` again reconciles anything missed.

Raw saves (``loaddata``) are not mirrored: run ``cli import`` after loading data.

Settings: a ``CRM_MIRROR`` dict in the CRM's settings, each key falling back to
the environment variable of the same name: ``STAFF_TABLE``, ``BORROWERS_TABLE``,
``APPLICATIONS_TABLE``, ``NOTES_TABLE``, ``REPAYMENTS_TABLE``, ``AWS_REGION`` (or
``AWS_DEFAULT_REGION``), ``BUSINESS_TIMEZONE`` (default ``Australia/Sydney``) and
``DYNAMODB_ENDPOINT_URL`` (optional).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.core.exceptions import ImproperlyConfigured
from django.db import models, transaction
from django.db.models.signals import m2m_changed, post_save, pre_delete

from ops.crm_import import (
    APPLICATION,
    BDM,
    BORROWER,
    NOTE,
    REPAYMENT,
    USER,
    bdm_staff_id,
    bind_crm_tables,
    delete_items,
    plan_import,
    staff_id,
    write_plan,
)

logger = logging.getLogger("crm_mirror")

MIRRORED = (USER, BDM, BORROWER, APPLICATION, NOTE, REPAYMENT)
TABLE_SETTINGS = {
    "staff": "STAFF_TABLE",
    "borrowers": "BORROWERS_TABLE",
    "applications": "APPLICATIONS_TABLE",
    "notes": "NOTES_TABLE",
    "repayments": "REPAYMENTS_TABLE",
}

Key = tuple[str, str]  # (table kind, item id)
Ref = tuple[str, Any]  # (model label, pk)


@dataclass(frozen=True)
class MirrorSettings:
    """Where the mirror writes: table names, region, endpoint and the business timezone."""

    tables: dict[str, str]
    region: str
    timezone: ZoneInfo
    endpoint: str | None

    @classmethod
    def load(cls) -> MirrorSettings:
        """From ``settings.CRM_MIRROR``, else the environment; a missing one is named."""
        configured: dict[str, str] = getattr(settings, "CRM_MIRROR", {})

        def get(name: str) -> str | None:
            return configured.get(name) or os.environ.get(name) or None

        tables = {}
        for kind, name in TABLE_SETTINGS.items():
            value = get(name)
            if not value:
                raise ImproperlyConfigured(
                    f"crm_mirror: set {name} in CRM_MIRROR or the environment"
                )
            tables[kind] = value
        region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
        if not region:
            raise ImproperlyConfigured(
                "crm_mirror: set AWS_REGION in CRM_MIRROR or the environment"
            )
        return cls(
            tables=tables,
            region=region,
            timezone=ZoneInfo(get("BUSINESS_TIMEZONE") or "Australia/Sydney"),
            endpoint=get("DYNAMODB_ENDPOINT_URL"),
        )


def connect() -> None:
    """Connect the handlers to the six models and the applications' borrowers M2M."""
    for label in MIRRORED:
        model = apps.get_model(label)
        post_save.connect(_on_save, sender=model, dispatch_uid=f"crm_mirror.save.{label}")
        pre_delete.connect(_on_delete, sender=model, dispatch_uid=f"crm_mirror.delete.{label}")
    through = apps.get_model(APPLICATION).borrowers.through
    m2m_changed.connect(_on_borrowers_changed, sender=through, dispatch_uid="crm_mirror.m2m")


def _label(instance: models.Model) -> str:
    return str(instance._meta.label_lower)


def _on_save(sender: Any, instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    ref = (_label(instance), instance.pk)
    _after_commit([ref], using=kwargs.get("using"))


def _on_borrowers_changed(
    sender: Any,
    instance: models.Model,
    action: str,
    reverse: bool,
    pk_set: set[Any] | None,
    **kwargs: Any,
) -> None:
    if not reverse:
        if action in ("post_add", "post_remove", "post_clear"):
            refs = [(APPLICATION, instance.pk)]
            _after_commit(refs, using=kwargs.get("using"))
        return
    # borrower.applications changed: the applications' borrower_ids
    if action == "pre_clear":
        pks = list(_objects(APPLICATION).filter(borrowers=instance).values_list("pk", flat=True))
    elif action in ("post_add", "post_remove"):
        pks = list(pk_set or ())
    else:
        return
    refs = [(APPLICATION, pk) for pk in pks]
    _after_commit(refs, using=kwargs.get("using"))


def _on_delete(sender: Any, instance: models.Model, **kwargs: Any) -> None:
    label = _label(instance)
    deletes: list[Key] = []
    follow: list[Ref] = []
    if label == USER:
        deletes.append(("staff", staff_id(instance.pk)))
        follow += [(BDM, pk) for pk in _pks(BDM, user=instance.pk)]
        follow += [(BORROWER, pk) for pk in _pks(BORROWER, user=instance.pk)]
    elif label == BDM:
        user = instance.user_id
        if user is None:
            deletes.append(("staff", bdm_staff_id(instance.pk)))
        else:
            follow.append((USER, user))  # its staff item stays, named after the user again
        follow += [(APPLICATION, pk) for pk in _pks(APPLICATION, bd=instance.pk)]
    elif label == BORROWER:
        deletes.append(("borrowers", str(instance.pk)))
        follow += [(APPLICATION, pk) for pk in _pks(APPLICATION, borrowers=instance.pk)]
    else:
        kind = {APPLICATION: "applications", NOTE: "notes", REPAYMENT: "repayments"}[label]
        deletes.append((kind, str(instance.pk)))
    _after_commit(follow, deletes, using=kwargs.get("using"))


def _after_commit(
    refs: list[Ref], deletes: list[Key] | None = None, using: str | None = None
) -> None:
    """Mirror after the transaction commits; an error is logged, never raised into the CRM."""

    def mirror_after_commit() -> None:  # named: Django logs a robust callback's __qualname__
        sync(refs, deletes or ())

    transaction.on_commit(mirror_after_commit, using=using, robust=True)


def sync(refs: Iterable[Ref], deletes: Iterable[Key] = ()) -> None:
    """Write the items of ``refs`` (as they are now in the database), then delete ``deletes``."""
    config = MirrorSettings.load()
    bind_crm_tables(config.tables, config.region, config.endpoint)
    delete_after: list[Key] = list(deletes)
    instances: dict[Ref, models.Model] = {}
    pks_by_label: dict[str, set[Any]] = defaultdict(set)
    for label, pk in refs:
        pks_by_label[label].add(pk)
    for label, pks in pks_by_label.items():
        # One query per model; a record deleted since is missing: its delete handler covers it.
        for instance in _objects(label).filter(pk__in=pks).order_by("pk"):
            delete_after += _gather(label, instance, instances)
    plan = plan_import(_serialize(instances.values()), config.timezone)
    for warning in plan.warnings:
        logger.warning("crm_mirror: %s", warning)
    for error in plan.errors:
        logger.error("crm_mirror: %s", error)
    report = write_plan(plan)
    for message in report.errors:
        logger.error("crm_mirror: %s", message)
    written = {(item.kind, item.id) for kind in plan.items.values() for item in kind.values()}
    delete_items(key for key in delete_after if key not in written)


def _gather(label: str, instance: models.Model, into: dict[Ref, models.Model]) -> list[Key]:
    """Add ``instance`` and the records its items depend on; return keys it makes obsolete."""

    def add(each: models.Model | None) -> None:
        if each is not None:
            into[(_label(each), each.pk)] = each

    add(instance)
    obsolete: list[Key] = []
    if label == USER:
        add(_objects(BDM).filter(user=instance.pk).first())
        add(_objects(BORROWER).filter(user=instance.pk).first())
    elif label == BDM:
        add(instance.user)
        if instance.user_id is not None:
            obsolete.append(("staff", bdm_staff_id(instance.pk)))  # it has a user now
        applications = _objects(APPLICATION).filter(bd=instance.pk)
        for application in applications.select_related("broker", "bd", "bd__user"):
            _gather(APPLICATION, application, into)
    elif label == BORROWER:
        add(instance.user)
    elif label == APPLICATION:
        add(instance.broker)
        if instance.bd is not None:
            add(instance.bd)
            add(instance.bd.user)
        # Written again, its notes are marked pending again: the note check reads only
        # pending notes, and a new BDM is reminded of a note the old one already was.
        for note in _objects(NOTE).filter(application=instance.pk, remind_date__isnull=False):
            add(note)
    return obsolete


def _serialize(instances: Iterable[models.Model]) -> list[Any]:
    records: list[Any] = json.loads(serializers.serialize("json", list(instances)))
    return records


def _objects(label: str) -> Any:
    return apps.get_model(label)._default_manager


def _pks(label: str, **lookup: Any) -> list[Any]:
    return list(_objects(label).filter(**lookup).values_list("pk", flat=True))
