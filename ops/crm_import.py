"""Map the loan CRM's Django records onto the contract's items and write them.

Used by ``cli import`` (a ``dumpdata`` JSON export) and by the CRM's mirror app
(``crm_mirror``, one saved instance serialized the same way), so both write the
same items. A record is ``{"model": "app_label.model", "pk": ..., "fields": {...}}``
and is matched on its full label:

* ``users.user`` -> staff ``user-<pk>``;
* ``brokers.bdm`` -> its user's staff item ``user-<user pk>`` (giving it the BDM's
  name), or staff ``bdm-<pk>`` when it has no user;
* ``borrowers.borrower`` -> borrowers ``<pk>``;
* ``applications.application`` -> applications ``<pk>`` (``bd`` -> the BDM's staff id);
* ``documents.note`` -> notes ``<pk>`` (``created_by`` -> ``user-<pk>``);
* ``documents.repayment`` -> repayments ``<pk>``.

``brokers.broker`` is read for the applications' ``broker_name`` only. The legacy
``applications.repayment`` (no reminder flags) is skipped and reported; every other
model is counted and skipped. Users and BDMs share the staff table, so their ids
are prefixed and one source model never overwrites another's item: two records
that map to one key are a *clash*, reported with both records, and neither is
written (so no batch ever holds a duplicate key).

Emails follow the CRM's own tasks, which mail ``bd.user.email`` and
``borrower.user.email``: the linked user's email first, then the record's own.
Names: a BDM's ``name``, else the user's first + last name, else the username; a
company borrower (``is_company``) its ``company_name``, else first + last name.

Values: ids and FKs become strings, decimals numbers, datetimes ISO-8601 with
their offset (naive ones, from ``USE_TZ = False``, are read as business time).
``Note.remind_date`` is a DateTimeField: it becomes the date of that instant in
the business timezone (``2026-11-23T14:00:00Z`` is 24 Nov in Sydney). Empty
strings and nulls leave the attribute out.

Writing (:func:`write_plan`) is an idempotent upsert: staff, borrowers,
applications and notes are replaced whole (BatchWriteItem, 25 distinct keys a
batch); repayments are updated in place (UpdateItem) so that a ``*_sent`` flag is
only ever set to true, never cleared: the flags belong to this service once it
runs. ``prune`` deletes items that the CRM no longer has.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib.models import (
    LOOK_AT_NEXT_RUN,
    NOTES_PENDING,
    REPAYMENTS_PENDING,
    Application,
    Borrower,
    CrmModel,
    Note,
    Repayment,
    Staff,
)

USER = "users.user"
BDM = "brokers.bdm"
BROKER = "brokers.broker"
BORROWER = "borrowers.borrower"
APPLICATION = "applications.application"
NOTE = "documents.note"
REPAYMENT = "documents.repayment"
LEGACY_REPAYMENT = "applications.repayment"

# source model -> the table (kind) its items go to
SOURCES: dict[str, str] = {
    USER: "staff",
    BDM: "staff",
    BORROWER: "borrowers",
    APPLICATION: "applications",
    NOTE: "notes",
    REPAYMENT: "repayments",
}
KIND_ORDER = ("staff", "borrowers", "applications", "notes", "repayments")
TABLES: dict[str, type[CrmModel]] = {
    "staff": Staff,
    "borrowers": Borrower,
    "applications": Application,
    "notes": Note,
    "repayments": Repayment,
}
SKIP_REASONS = {
    LEGACY_REPAYMENT: "legacy model without reminder flags; documents.repayment is imported",
    BROKER: "read for the applications' broker names",
}
REPAYMENT_FLAGS = (
    "reminder_sent",
    "overdue_3_day_sent",
    "overdue_7_day_sent",
    "overdue_10_day_sent",
)
BATCH_SIZE = 25  # BatchWriteItem's limit
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class DumpError(ValueError):
    """The file is not a ``dumpdata`` JSON export at all."""


@dataclass(frozen=True)
class Source:
    """One source record: its index in the dump, model label and pk."""

    index: int
    label: str
    pk: object

    def __str__(self) -> str:
        return f"record {self.index} ({self.label} pk={self.pk!r})"


@dataclass(frozen=True)
class RecordError:
    """One record that could not be imported (or a warning about one), and why."""

    source: Source
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


@dataclass
class PlannedItem:
    """One item to write and the records it was made from."""

    kind: str
    values: dict[str, Any]
    sources: list[Source]

    @property
    def id(self) -> str:
        """The item's key."""
        return str(self.values["id"])


@dataclass
class Plan:
    """The items a set of records maps to, and what was skipped or wrong."""

    items: dict[str, dict[str, PlannedItem]] = field(
        default_factory=lambda: {kind: {} for kind in KIND_ORDER}
    )
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[RecordError] = field(default_factory=list)
    warnings: list[RecordError] = field(default_factory=list)
    # source models present in the records, and the tables with a record that failed
    present: set[str] = field(default_factory=set)
    failed_kinds: set[str] = field(default_factory=set)

    @property
    def known(self) -> bool:
        """Whether the records hold any model this mapping knows."""
        return bool(self.present & (set(SOURCES) | {LEGACY_REPAYMENT, BROKER}))

    def prunable(self, kind: str) -> bool:
        """Whether ``kind``'s table can be pruned: all its source models present, none failed."""
        sources = {label for label, each in SOURCES.items() if each == kind}
        return sources <= self.present and kind not in self.failed_kinds


@dataclass
class WriteReport:
    """What was written: items per table, items pruned, and the errors."""

    written: Counter[str] = field(default_factory=Counter)
    pruned: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def load_dump(path: Path) -> list[Any]:
    """Read a dump file: a JSON list of records, or :class:`DumpError`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DumpError(f"{path} is not a JSON file: {exc}") from None
    if not isinstance(data, list):
        raise DumpError(
            f"{path} is not a Django dumpdata export: expected a JSON list of records, "
            f"got a JSON {type(data).__name__}"
        )
    return data


def label_of(record: object) -> str | None:
    """``"Users.User"`` -> ``users.user`` (None when the record names no model)."""
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        return None
    return str(record["model"]).lower()


def staff_id(user_pk: object) -> str:
    """The staff id of a ``users.user``."""
    return f"user-{user_pk}"


def bdm_staff_id(bdm_pk: object) -> str:
    """The staff id of a ``brokers.bdm`` that has no user."""
    return f"bdm-{bdm_pk}"


def plan_import(records: list[Any], timezone: ZoneInfo) -> Plan:
    """Map ``records`` (a dump, or a few serialized instances) to the items to write."""
    return _Planner(records, timezone).plan


class _Planner:
    def __init__(self, records: list[Any], timezone: ZoneInfo) -> None:
        self.timezone = timezone
        self.plan = Plan()
        self._clashed: dict[tuple[str, str], Source] = {}
        self._users: dict[str, tuple[Source, dict[str, Any]]] = {}
        self._bdms: dict[str, tuple[Source, dict[str, Any]]] = {}
        self._bdm_of_user: dict[str, tuple[Source, dict[str, Any]]] = {}
        self._brokers: dict[str, str | None] = {}
        usable: list[tuple[Source, dict[str, Any]]] = []
        for index, record in enumerate(records):
            label = label_of(record)
            pk = record.get("pk") if isinstance(record, dict) else None
            if label is None:
                self._error(Source(index, "?", pk), 'not a dumpdata record (no "model")')
                continue
            self.plan.present.add(label)
            source = Source(index, label, pk)
            if label not in SOURCES and label != BROKER:
                self.plan.skipped[label] += 1
                continue
            try:
                fields = _fields_of(record)
            except ValueError as exc:
                if label == BROKER:  # only a name source: its applications lose the name
                    self._warn(source, str(exc))
                    self.plan.skipped[label] += 1
                else:
                    self._error(source, str(exc))
                continue
            usable.append((source, fields))
            key = str(pk)
            if label == USER:
                self._users.setdefault(key, (source, fields))
            elif label == BDM:
                self._bdms.setdefault(key, (source, fields))
            elif label == BROKER:
                self._brokers[key] = _broker_name(fields)
                self.plan.skipped[label] += 1
        self._link_bdms()
        for source, fields in usable:
            if source.label != BROKER:
                self._map(source, fields)
        self.plan.errors.sort(key=lambda error: error.source.index)

    def _link_bdms(self) -> None:
        for source, fields in self._bdms.values():
            user = _Fields(fields, self.timezone).key("user") if "user" in fields else None
            if user is None:
                continue
            if user in self._bdm_of_user:
                first = self._bdm_of_user[user][0]
                self._clash("staff", staff_id(user), first, source)
                continue
            self._bdm_of_user[user] = (source, fields)

    def _error(self, source: Source, reason: str) -> None:
        self.plan.errors.append(RecordError(source, reason))
        if source.label in SOURCES:
            self.plan.failed_kinds.add(SOURCES[source.label])

    def _warn(self, source: Source, reason: str) -> None:
        self.plan.warnings.append(RecordError(source, reason))

    def _clash(self, kind: str, item_id: str, first: Source, second: Source) -> None:
        table = TABLES[kind].Meta.table_name
        self._error(
            second,
            f"clashes with {first} on {kind} item {item_id!r} (table {table}): "
            "two source records, one key; neither is written",
        )
        self.plan.items[kind].pop(item_id, None)
        self._clashed[(kind, item_id)] = second

    def _add(self, kind: str, values: dict[str, Any], sources: list[Source]) -> None:
        item = PlannedItem(kind, {k: v for k, v in values.items() if v is not None}, sources)
        if (kind, item.id) in self._clashed:
            self._clash(kind, item.id, self._clashed[(kind, item.id)], sources[0])
            return
        if item.id in self.plan.items[kind]:
            self._clash(kind, item.id, self.plan.items[kind][item.id].sources[0], sources[0])
            return
        try:
            TABLES[kind](**item.values).serialize()  # type errors surface with this record
        except ValueError as exc:
            self._error(sources[0], str(exc))
            return
        self.plan.items[kind][item.id] = item

    def _map(self, source: Source, fields: dict[str, Any]) -> None:
        f = _Fields(fields, self.timezone)
        pk = str(source.pk)
        try:
            if source.label == USER:
                self._map_user(source, pk, f)
            elif source.label == BDM:
                self._map_bdm(source, pk, f)
            elif source.label == BORROWER:
                self._map_borrower(source, pk, f)
            elif source.label == APPLICATION:
                self._map_application(source, pk, f)
            elif source.label == NOTE:
                self._map_note(source, pk, f)
            else:
                self._map_repayment(source, pk, f)
        except ValueError as exc:
            self._error(source, str(exc))

    def _map_user(self, source: Source, pk: str, f: _Fields) -> None:
        values: dict[str, Any] = {"id": staff_id(pk)}
        sources = [source]
        bdm = self._bdm_of_user.get(pk)
        bdm_fields = _Fields(bdm[1], self.timezone) if bdm else None
        if bdm is not None:
            sources.append(bdm[0])
        values["name"] = (
            (bdm_fields.text("name") if bdm_fields else None) or f.full_name() or f.text("username")
        )
        values["email"] = f.text("email") or (bdm_fields.text("email") if bdm_fields else None)
        # The user's own first name (a BDM record has none): the greeting uses it.
        values["first_name"] = f.text("first_name")
        self._add("staff", values, sources)

    def _map_bdm(self, source: Source, pk: str, f: _Fields) -> None:
        user = f.key("user")
        if user is None:
            self._add(
                "staff",
                {"id": bdm_staff_id(pk), "name": f.text("name"), "email": f.text("email")},
                [source],
            )
            return
        if user in self._users:
            return  # part of its user's staff item (see _map_user)
        self._warn(
            source,
            f"user {user!r} is not among the dump's {USER} records; its staff item "
            f"{staff_id(user)!r} has the BDM's own name and email",
        )
        self._add(
            "staff",
            {"id": staff_id(user), "name": f.text("name"), "email": f.text("email")},
            [source],
        )

    def _map_borrower(self, source: Source, pk: str, f: _Fields) -> None:
        user_fields = self._linked_user(source, f)
        company = f.text("company_name") if f.flag("is_company") else None
        person = f if f.full_name() else user_fields
        name = company or (person.full_name() if person else None)
        # A company has no first name; a person's comes with the name used.
        first_name = None if company or person is None else person.text("first_name")
        email = (user_fields.text("email") if user_fields else None) or f.text("email")
        self._add(
            "borrowers",
            {"id": pk, "name": name, "first_name": first_name, "email": email},
            [source],
        )

    def _linked_user(self, source: Source, f: _Fields) -> _Fields | None:
        user = f.key("user")
        if user is None:
            return None
        if user not in self._users:
            self._warn(
                source,
                f"user {user!r} is not among the dump's {USER} records; "
                "the record's own email is used",
            )
            return None
        return _Fields(self._users[user][1], self.timezone)

    def _map_application(self, source: Source, pk: str, f: _Fields) -> None:
        values: dict[str, Any] = {
            "id": pk,
            "reference_number": f.text("reference_number"),
            "stage": f.text("stage"),
            "stage_last_updated": f.timestamp("stage_last_updated"),
            "loan_amount": f.number("loan_amount"),
            "broker_name": self._broker(source, f),
            "bd_id": self._bd(source, f),
            "borrower_ids": f.keys("borrowers"),
        }
        self._add("applications", values, [source])

    def _bd(self, source: Source, f: _Fields) -> str | None:
        bd = f.key("bd")
        if bd is None:
            return None
        if bd not in self._bdms:
            self._warn(
                source,
                f"bd {bd!r} is not among the dump's {BDM} records; imported without a BDM",
            )
            return None
        user = _Fields(self._bdms[bd][1], self.timezone).key("user")
        return staff_id(user) if user is not None else bdm_staff_id(bd)

    def _broker(self, source: Source, f: _Fields) -> str | None:
        value = f.fields.get("broker")
        if value is None or value == "":
            return None
        if isinstance(value, (bool, list, dict)):
            raise ValueError(f"broker {value!r} is neither a broker id nor a name")
        if str(value) in self._brokers:
            return self._brokers[str(value)]
        if isinstance(value, str) and not value.isdigit():
            return value.strip() or None  # a CharField holding the broker's name
        self._warn(
            source,
            f"broker {value!r} is not among the dump's {BROKER} records; "
            "imported without a broker name",
        )
        return None

    def _map_note(self, source: Source, pk: str, f: _Fields) -> None:
        author = f.key("created_by")
        values: dict[str, Any] = {
            "id": pk,
            "title": f.text("title"),
            "content": f.text("content"),
            "remind_date": f.day("remind_date"),
            "application_id": f.key("application"),
            "created_by": staff_id(author) if author is not None else None,
            "created_at": f.timestamp("created_at"),
        }
        # The pending index's mark: its reminders may be owed (README, Contract with the CRM).
        values["pending_check"] = NOTES_PENDING if values["remind_date"] else None
        self._add("notes", values, [source])

    def _map_repayment(self, source: Source, pk: str, f: _Fields) -> None:
        values: dict[str, Any] = {
            "id": pk,
            "application_id": f.key("application"),
            "amount": f.number("amount"),
            "due_date": f.day("due_date"),
            "paid_date": f.day("paid_date"),
        }
        # The pending index's marks: an unpaid repayment is looked at by the next run
        # (which then moves it to the day its next notice is due).
        unpaid = values["due_date"] is not None and values["paid_date"] is None
        values["pending_check"] = REPAYMENTS_PENDING if unpaid else None
        values["next_notice_on"] = LOOK_AT_NEXT_RUN if unpaid else None
        for flag in REPAYMENT_FLAGS:
            values[flag] = f.flag(flag)
        self._add("repayments", values, [source])


def write_plan(plan: Plan, *, prune: bool = False, dry_run: bool = False) -> WriteReport:
    """Upsert the planned items (and with ``prune`` delete what the CRM no longer has).

    ``dry_run`` writes nothing and reports what would be written and pruned.
    """
    report = WriteReport()
    for kind in KIND_ORDER:
        items = list(plan.items[kind].values())
        if dry_run:
            report.written[kind] += len(items)
        elif kind == "repayments":
            _update_repayments(items, report)
        else:
            _put_items(TABLES[kind], items, report)
        if (
            prune
            and plan.prunable(kind)
            and not any(e.startswith(f"{kind} ") for e in report.errors)
        ):
            _prune(kind, set(plan.items[kind]), report, dry_run=dry_run)
    return report


def _describe(items: Iterable[PlannedItem]) -> str:
    return "; ".join(
        f"{item.id} from " + " and ".join(str(s) for s in item.sources) for item in items
    )


def _put_items(model: type[CrmModel], items: list[PlannedItem], report: WriteReport) -> None:
    kind = items[0].kind if items else ""
    for start in range(0, len(items), BATCH_SIZE):
        chunk = items[start : start + BATCH_SIZE]
        try:
            with model.batch_write() as batch:
                for item in chunk:
                    batch.save(model(**item.values))
        except PynamoDBException as exc:
            report.errors.append(
                f"{kind} (table {model.Meta.table_name}): could not write {_describe(chunk)}: "
                f"{_reason(exc)}"
            )
            continue
        report.written[kind] += len(chunk)


def repayment_actions(values: Mapping[str, Any]) -> list[Action]:
    """The UpdateItem actions that upsert a repayment without ever clearing a flag.

    CRM attributes are set (or removed when the CRM has none). A flag the CRM has
    as true is set; otherwise the item keeps its own flag (false when it has none),
    because once this service runs it is the one that sets them.
    """
    actions: list[Action] = []
    for name in (
        "application_id",
        "amount",
        "due_date",
        "paid_date",
        "pending_check",
        "next_notice_on",
    ):
        attribute = getattr(Repayment, name)
        value = values.get(name)
        actions.append(attribute.remove() if value is None else attribute.set(value))
    for flag in REPAYMENT_FLAGS:
        attribute = getattr(Repayment, flag)
        actions.append(attribute.set(True if values.get(flag) else attribute | False))
    return actions


def _update_repayments(items: list[PlannedItem], report: WriteReport) -> None:
    for item in items:
        try:
            Repayment(id=item.id).update(actions=repayment_actions(item.values))
        except PynamoDBException as exc:
            report.errors.append(
                f"repayments (table {Repayment.Meta.table_name}): could not write "
                f"{_describe([item])}: {_reason(exc)}"
            )
            continue
        report.written["repayments"] += 1


def _prune(kind: str, keep: set[str], report: WriteReport, *, dry_run: bool) -> None:
    # Operator tooling, never a check's path: a keys-only Scan of the whole table is fine here.
    model = TABLES[kind]
    stale = sorted(item.id for item in model.scan(attributes_to_get=["id"]) if item.id not in keep)
    if not dry_run:
        for start in range(0, len(stale), BATCH_SIZE):
            chunk = stale[start : start + BATCH_SIZE]
            try:
                with model.batch_write() as batch:
                    for item_id in chunk:
                        batch.delete(model(id=item_id))
            except PynamoDBException as exc:
                report.errors.append(
                    f"{kind} (table {model.Meta.table_name}): could not delete "
                    f"{', '.join(chunk)}: {_reason(exc)}"
                )
                stale = [s for s in stale if s not in chunk]
    report.pruned.extend((kind, item_id) for item_id in stale)


def delete_items(keys: Iterable[tuple[str, str]]) -> None:
    """Delete items by ``(kind, id)`` (the mirror app, on a CRM delete): one batch per table."""
    by_kind: dict[str, set[str]] = defaultdict(set)
    for kind, item_id in keys:
        by_kind[kind].add(item_id)
    for kind, item_ids in by_kind.items():
        model = TABLES[kind]
        with model.batch_write() as batch:
            for item_id in sorted(item_ids):
                batch.delete(model(id=item_id))


def bind_crm_tables(tables: Mapping[str, str], region: str, endpoint: str | None = None) -> None:
    """Point the five CRM models at ``tables`` (kind -> table name) in ``region``."""
    for kind, model in TABLES.items():
        wanted = (tables[kind], region, endpoint)
        if (model.Meta.table_name, model.Meta.region, model.Meta.host) != wanted:
            model.Meta.table_name, model.Meta.region, model.Meta.host = wanted
            model._connection = None


def _reason(exc: PynamoDBException) -> str:
    cause = exc.cause_response_code
    message = exc.cause_response_message or str(exc)
    return f"{cause}: {message}" if cause else message


def _fields_of(record: dict[str, Any]) -> dict[str, Any]:
    pk = record.get("pk")
    if pk is None or isinstance(pk, (bool, list, dict)) or str(pk).strip() == "":
        raise ValueError(
            "no usable pk (natural primary keys are not supported: "
            "export without --natural-primary)"
        )
    fields = record.get("fields")
    if not isinstance(fields, dict):
        raise ValueError('"fields" is missing or not an object')
    return fields


class _Fields:
    """Typed access to one record's ``fields``; every error names the field."""

    def __init__(self, fields: dict[str, Any], timezone: ZoneInfo) -> None:
        self.fields = fields
        self.timezone = timezone

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if isinstance(value, (bool, list, dict)):
            raise ValueError(f"{name} {value!r} is not text")
        text = str(value).strip()
        return text or None

    def full_name(self) -> str | None:
        parts = [self.fields.get("first_name"), self.fields.get("last_name")]
        name = " ".join(str(p).strip() for p in parts if isinstance(p, str) and p.strip())
        return name or None

    def key(self, name: str) -> str | None:
        value = self.fields.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, list):
            raise ValueError(
                f"{name} {value!r} is a natural key (not supported: "
                "export without --natural-foreign)"
            )
        if isinstance(value, (bool, dict, float)):
            raise ValueError(f"{name} {value!r} is not a primary key")
        return str(value)

    def keys(self, name: str) -> list[str] | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise ValueError(f"{name} {value!r} is not a list of primary keys")
        keys = []
        for each in value:
            if isinstance(each, list):
                raise ValueError(
                    f"{name} holds natural keys (not supported: export without --natural-foreign)"
                )
            if isinstance(each, (bool, dict, float)) or each is None:
                raise ValueError(f"{name} entry {each!r} is not a primary key")
            keys.append(str(each))
        return keys

    def number(self, name: str) -> int | float | None:
        value = self.fields.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, (bool, list, dict)):
            raise ValueError(f"{name} {value!r} is not a number")
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{name} {value!r} is not a number") from None
        if not amount.is_finite():
            raise ValueError(f"{name} {value!r} is not a number")
        return int(amount) if amount == amount.to_integral_value() else float(amount)

    def timestamp(self, name: str) -> str | None:
        value = self.fields.get(name)
        if value is None or value == "":
            return None
        return self._datetime(name, value).isoformat()

    def day(self, name: str) -> str | None:
        value = self.fields.get(name)
        if value is None or value == "":
            return None
        problem = f"{name} {value!r} is not a YYYY-MM-DD date"
        if isinstance(value, str) and _DAY.fullmatch(value.strip()):
            try:
                return date.fromisoformat(value.strip()).isoformat()
            except ValueError:
                raise ValueError(problem) from None
        try:  # a DateTimeField: the date of that instant in business time
            moment = self._datetime(name, value)
        except ValueError:
            raise ValueError(problem) from None
        return moment.astimezone(self.timezone).date().isoformat()

    def flag(self, name: str) -> bool | None:
        value = self.fields.get(name)
        if value is None or isinstance(value, bool):
            return value
        raise ValueError(f"{name} {value!r} is not true or false")

    def _datetime(self, name: str, value: Any) -> datetime:
        if not isinstance(value, str):
            raise ValueError(f"{name} {value!r} is not an ISO-8601 datetime")
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{name} {value!r} is not an ISO-8601 datetime") from None
        # Django with USE_TZ = False writes naive datetimes: the CRM's local time.
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self.timezone)


def _broker_name(fields: dict[str, Any]) -> str | None:
    for name in ("name", "company_name", "business_name"):
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return _Fields(fields, ZoneInfo("UTC")).full_name()


@dataclass
class MarkReport:
    """What ``mark_pending`` marked, per table."""

    notes: int = 0
    repayments: int = 0


def mark_pending(since: date) -> MarkReport:
    """Mark the CRM items that predate the pending indexes (operator tooling: Scans).

    Notes with a remind date on or after ``since`` (older ones are past the catch-up
    window) and unpaid repayments get the marks the CRM writes (README, Contract with
    the CRM), only where they have none and only while the date read is unchanged.
    The next runs read each once: a note or repayment already handled is skipped by
    the ledger and flags and leaves the index again.
    """
    report = MarkReport()
    for note in Note.scan(Note.pending_check.does_not_exist() & Note.remind_date.exists()):
        if not note.remind_date or note.remind_date < since.isoformat():
            continue
        if _mark(note, [Note.pending_check.set(NOTES_PENDING)], Note.remind_date, note.remind_date):
            report.notes += 1
    unpaid = Repayment.pending_check.does_not_exist() & Repayment.paid_date.does_not_exist()
    for repayment in Repayment.scan(unpaid & Repayment.due_date.exists()):
        actions = [
            Repayment.pending_check.set(REPAYMENTS_PENDING),
            Repayment.next_notice_on.set(LOOK_AT_NEXT_RUN),
        ]
        if _mark(repayment, actions, Repayment.due_date, repayment.due_date):
            report.repayments += 1
    return report


def _mark(item: CrmModel, actions: Sequence[Action], attribute: Any, value: str | None) -> bool:
    try:
        item.update(actions=list(actions), condition=attribute == value)
    except PynamoDBException as exc:
        if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
        return False  # changed by the CRM meanwhile: it wrote its own marks
    return True
