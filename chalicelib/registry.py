"""Every check and every kind of notice, by name: the one place they are listed.

Each check declares itself in its module (``CHECK``); everything that needs a
check's or a kind's name (the runner, the SES events' metrics, the CLI, preview,
retry-failed and the tests) reads it from here.
"""

from __future__ import annotations

from chalicelib.checks import Check, Kind, note_reminders, repayment_reminders, stale_applications

CHECKS: dict[str, Check] = {
    check.name: check
    for check in (stale_applications.CHECK, note_reminders.CHECK, repayment_reminders.CHECK)
}
KINDS: dict[str, Kind] = {kind.name: kind for check in CHECKS.values() for kind in check.kinds}


def check(name: str) -> Check:
    """The check called ``name``; ``ValueError`` naming the checks there are."""
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; expected one of {', '.join(CHECKS)}")
    return CHECKS[name]


def kind(name: str) -> Kind:
    """The kind of notice called ``name``; ``ValueError`` naming the kinds there are."""
    if name not in KINDS:
        raise ValueError(f"unknown kind {name!r}; expected one of {', '.join(KINDS)}")
    return KINDS[name]
