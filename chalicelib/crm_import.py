"""Import a Django ``dumpdata`` JSON export of the CRM into the contract's tables.

A dump is a JSON list of ``{"model": "app_label.modelname", "pk": ..., "fields": {...}}``.
Records are matched on the model name (the app label varies between CRMs) and
mapped to the items of the README's "Items" contract:

* ``user``, ``customuser``, ``staff``, ``bdm`` -> staff: ``name`` (or ``first_name`` +
  ``last_name``, or ``username``), ``email``;
* ``borrower`` -> borrowers: ``name`` (or ``full_name``, or ``first_name`` + ``last_name``),
  ``email``;
* ``application``, ``loanapplication`` -> applications: ``reference_number`` (or
  ``reference``), ``stage``, ``stage_last_updated``, ``loan_amount``, ``broker_name`` (from
  ``broker_name``, or the ``broker`` FK resolved against the dump's ``broker`` records, or
  ``broker`` itself when it is text), ``bd``/``bdm`` FK -> ``bd_id``, M2M ``borrowers`` ->
  ``borrower_ids``;
* ``note`` -> notes: ``title``, ``content``, ``remind_date``, ``application`` FK ->
  ``application_id``, ``created_by`` FK, ``created_at``;
* ``repayment`` -> repayments: ``application`` FK, ``amount``, ``due_date``, ``paid_date``,
  ``reminder_sent``, ``overdue_3_day_sent``, ``overdue_7_day_sent``, ``overdue_10_day_sent``.

Ids are the string of the pk (FKs likewise); decimals become numbers; datetimes
become ISO-8601 with their offset (naive ones, from ``USE_TZ = False``, are taken
as business time); dates stay ``YYYY-MM-DD`` (a datetime given for a date is
converted to its business date). Empty strings and nulls leave the attribute
out. Other models (``broker`` included) are not imported, only counted. A record
that cannot be mapped is reported with its index, model, pk and reason and the
rest are still imported.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any
from zoneinfo import ZoneInfo

from pynamodb.models import BatchWrite

from chalicelib.models import Application, Borrower, CrmModel, Note, Repayment, Staff

# model name (lower case, app label dropped) -> (kind, model)
KINDS: dict[str, tuple[str, type[CrmModel]]] = {
    "user": ("staff", Staff),
    "customuser": ("staff", Staff),
    "staff": ("staff", Staff),
    "bdm": ("staff", Staff),
    "borrower": ("borrowers", Borrower),
    "application": ("applications", Application),
    "loanapplication": ("applications", Application),
    "note": ("notes", Note),
    "repayment": ("repayments", Repayment),
}
KIND_ORDER = ("staff", "borrowers", "applications", "notes", "repayments")
BROKER_MODEL = "broker"
REPAYMENT_FLAGS = (
    "reminder_sent",
    "overdue_3_day_sent",
    "overdue_7_day_sent",
    "overdue_10_day_sent",
)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class DumpError(ValueError):
    """The file is not a ``dumpdata`` JSON export at all."""


@dataclass(frozen=True)
class RecordError:
    """One record that could not be imported, and why."""

    index: int
    model: str
    pk: Any
    reason: str

    def __str__(self) -> str:
        return f"record {self.index} ({self.model} pk={self.pk!r}): {self.reason}"


@dataclass
class ImportReport:
    """What an import did: items written per kind, models left out, and problems."""

    imported: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    errors: list[RecordError] = field(default_factory=list)
    warnings: list[RecordError] = field(default_factory=list)


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


def model_name(record: Any) -> str | None:
    """``crm.Application`` -> ``application`` (None when the record names no model)."""
    if not isinstance(record, dict) or not isinstance(record.get("model"), str):
        return None
    return str(record["model"]).rsplit(".", 1)[-1].lower()


class Importer:
    """Maps records to items and writes them with PynamoDB's ``batch_write``.

    Use as a context manager around :meth:`add`; the batches are flushed on exit.
    """

    def __init__(self, records: list[Any], timezone: ZoneInfo) -> None:
        self.timezone = timezone
        self.report = ImportReport()
        self._brokers = {
            str(r.get("pk")): _broker_name(r.get("fields"))
            for r in records
            if model_name(r) == BROKER_MODEL and isinstance(r, dict)
        }
        self._stack = ExitStack()
        self._batches: dict[type[CrmModel], BatchWrite[Any]] = {}

    def __enter__(self) -> Importer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def add(self, index: int, record: Any) -> None:
        """Map record ``index`` and queue it for writing, or record why it cannot be."""
        name = model_name(record)
        label = str(record.get("model")) if isinstance(record, dict) else "?"
        pk = record.get("pk") if isinstance(record, dict) else None
        if name is None:
            self._error(index, label, pk, 'not a dumpdata record (no "model")')
            return
        if name not in KINDS:
            self.report.ignored[label] += 1
            return
        kind, model = KINDS[name]
        try:
            item = model(**self._values(index, label, name, record))
            item.serialize()  # type errors surface here, with this record's index
        except ValueError as exc:
            self._error(index, label, pk, str(exc))
            return
        if model not in self._batches:
            self._batches[model] = self._stack.enter_context(model.batch_write())
        self._batches[model].save(item)
        self.report.imported[kind] += 1

    def _error(self, index: int, label: str, pk: Any, reason: str) -> None:
        self.report.errors.append(RecordError(index, label, pk, reason))

    def _values(self, index: int, label: str, name: str, record: dict[str, Any]) -> dict[str, Any]:
        pk = record.get("pk")
        if pk is None or isinstance(pk, (bool, list, dict)) or str(pk).strip() == "":
            raise ValueError(
                "no usable pk (natural primary keys are not supported: "
                "export without --natural-primary)"
            )
        fields = record.get("fields")
        if not isinstance(fields, dict):
            raise ValueError('"fields" is missing or not an object')
        values: dict[str, Any] = {"id": str(pk)}
        f = _Fields(fields, self.timezone)
        kind = KINDS[name][0]
        if kind == "staff":
            values["name"] = f.text("name") or _full_name(fields) or f.text("username")
            values["email"] = f.text("email")
        elif kind == "borrowers":
            values["name"] = f.text("name") or f.text("full_name") or _full_name(fields)
            values["email"] = f.text("email")
        elif kind == "applications":
            values["reference_number"] = f.text("reference_number") or f.text("reference")
            values["stage"] = f.text("stage")
            values["stage_last_updated"] = f.timestamp("stage_last_updated")
            values["loan_amount"] = f.number("loan_amount")
            values["broker_name"] = f.text("broker_name") or self._broker(index, label, record)
            values["bd_id"] = f.key("bd") if "bd" in fields else f.key("bdm")
            values["borrower_ids"] = f.keys("borrowers")
        elif kind == "notes":
            values["title"] = f.text("title")
            values["content"] = f.text("content")
            values["remind_date"] = f.day("remind_date")
            values["application_id"] = f.key("application")
            values["created_by"] = f.key("created_by")
            values["created_at"] = f.timestamp("created_at")
        else:
            values["application_id"] = f.key("application")
            values["amount"] = f.number("amount")
            values["due_date"] = f.day("due_date")
            values["paid_date"] = f.day("paid_date")
            for flag in REPAYMENT_FLAGS:
                values[flag] = f.flag(flag)
        return {k: v for k, v in values.items() if v is not None}

    def _broker(self, index: int, label: str, record: dict[str, Any]) -> str | None:
        value = record["fields"].get("broker")
        if value is None or value == "":
            return None
        if isinstance(value, (bool, list, dict)):
            raise ValueError(f"broker {value!r} is neither a broker id nor a name")
        if str(value) in self._brokers:
            return self._brokers[str(value)]
        if isinstance(value, str) and not value.isdigit():
            return value.strip() or None  # a CharField holding the broker's name
        self.report.warnings.append(
            RecordError(
                index,
                label,
                record.get("pk"),
                f"broker {value!r} is not among the dump's broker records; "
                "imported without a broker name",
            )
        )
        return None


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
        try:  # a DateTimeField: its date in business time
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


def _full_name(fields: dict[str, Any]) -> str | None:
    parts = [fields.get("first_name"), fields.get("last_name")]
    name = " ".join(str(p).strip() for p in parts if isinstance(p, str) and p.strip())
    return name or None


def _broker_name(fields: Any) -> str | None:
    if not isinstance(fields, dict):
        return None
    for name in ("name", "company_name", "business_name"):
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return _full_name(fields)
