"""The three reminder checks. Each declares itself once, as a :class:`Check`.

A check module ends with ``CHECK = Check(...)``: its name, its run function, the
business-hours setting it starts at, and the kinds of notice it writes, each with
its template and ledger-key builder. :mod:`chalicelib.registry` collects them;
the runner, the metrics, the CLI's choices, ``preview`` and ``retry-failed`` all
read the names from there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chalicelib import ledger

if TYPE_CHECKING:
    from chalicelib.run import Run


@dataclass(frozen=True)
class Kind:
    """One kind of notice: the ``kind`` its ledger entries carry, and its email template.

    Its ledger keys are its check's name, then the values of ``key_parts`` in order;
    a part named in ``fixed`` always has that value (a repayment's tier, say).
    """

    name: str
    check: str
    template: str
    key_parts: tuple[str, ...]
    fixed: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def _free(self) -> tuple[str, ...]:
        # Computed once per kind: keys are built for every notice a run looks at.
        fixed = dict(self.fixed)
        return tuple(part for part in self.key_parts if part not in fixed)

    def key(self, *values: object) -> str:
        """The ledger key of one notice of this kind, from its free key parts in order."""
        free = self._free
        if len(values) != len(free):
            raise TypeError(f"{self.name} keys take {', '.join(free)}")
        parts: dict[str, object] = dict(zip(free, values, strict=True))
        parts.update(self.fixed)
        return ledger.notice_key(self.check, *(parts[p] for p in self.key_parts))


@dataclass(frozen=True)
class Check:
    """One scheduled check: its name, run function, window start and notice kinds."""

    name: str
    run: Callable[[Run], None]
    # The ``chalicelib.config.Windows`` field of its local start time.
    window_start: str
    kinds: tuple[Kind, ...]
