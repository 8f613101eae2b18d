"""Every check and every kind of notice, by name: the one place they are listed.

Check names are written here, each with the module that declares the check
(``CHECK``, named from here by :func:`declared_in`); a kind's name is written in
its check's ``CHECK``. Everything that needs a check's or a kind's name (app.py,
the runner, the SES events' metrics, the CLI, preview, retry-failed and the tests)
reads it from here.

A check's module is imported when the check is first asked for, so a scheduled
function loads its own check only; :data:`CHECKS` and :data:`KINDS` (every check,
every kind) import all of them on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.checks import Check, Kind

STALE_APPLICATIONS = "stale_applications"
NOTE_REMINDERS = "note_reminders"
REPAYMENT_REMINDERS = "repayment_reminders"

# Each check's name and the module that declares it, in the order they are listed.
MODULES: dict[str, str] = {
    name: f"chalicelib.checks.{name}"
    for name in (STALE_APPLICATIONS, NOTE_REMINDERS, REPAYMENT_REMINDERS)
}
NAMES: tuple[str, ...] = tuple(MODULES)

if TYPE_CHECKING:
    CHECKS: dict[str, Check]
    KINDS: dict[str, Kind]


def declared_in(module: str) -> str:
    """The name of the check that ``module`` (a check module's ``__name__``) declares."""
    for name, path in MODULES.items():
        if path == module:
            return name
    raise LookupError(f"{module} declares no check listed in chalicelib.registry")


def check(name: str) -> Check:
    """The check called ``name`` (its module imported now); ``ValueError`` naming the checks."""
    if name not in MODULES:
        raise ValueError(f"unknown check {name!r}; expected one of {', '.join(NAMES)}")
    declared: Check = importlib.import_module(MODULES[name]).CHECK
    return declared


def kind(name: str) -> Kind:
    """The kind of notice called ``name``; ``ValueError`` naming the kinds there are."""
    kinds = _all_kinds()
    if name not in kinds:
        raise ValueError(f"unknown kind {name!r}; expected one of {', '.join(kinds)}")
    return kinds[name]


def _all_checks() -> dict[str, Check]:
    return {name: check(name) for name in NAMES}


def _all_kinds() -> dict[str, Kind]:
    return {kind.name: kind for check in _all_checks().values() for kind in check.kinds}


def __getattr__(name: str) -> object:
    # CHECKS and KINDS import every check: made when first read, not when this is imported.
    if name == "CHECKS":
        return _all_checks()
    if name == "KINDS":
        return _all_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
