"""The operators' report page (``ops.cli report``) as tests read it: parsed, no browser."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


@dataclass
class Page(HTMLParser):
    """What a test reads from the page: tables by id (rows of cell texts), scripts, links."""

    tables: dict[str, list[list[str]]] = field(default_factory=dict)
    scripts: list[dict[str, str | None]] = field(default_factory=list)
    islands: dict[str, Any] = field(default_factory=dict)
    external: list[str] = field(default_factory=list)
    _table: str | None = None
    _cell: list[str] | None = None
    _island: str | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Track tables, cells, scripts and any resource the page would fetch."""
        values = dict(attrs)
        self.external += [str(values[a]) for a in ("src", "href") if values.get(a) and tag != "a"]
        if tag == "table":
            self._table = values.get("id")
            self.tables[str(self._table)] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "script":
            self.scripts.append(values)
            if values.get("type") == "application/json":
                self._island = values.get("id")

    def handle_endtag(self, tag: str) -> None:
        """Close cells, tables and JSON islands."""
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "script":
            self._island = None

    def handle_data(self, data: str) -> None:
        """Collect cell text and the JSON of the charts."""
        if self._cell is not None:
            self._cell.append(data)
        if self._island is not None:
            self.islands[self._island] = json.loads(data)

    def rows(self, table: str) -> dict[str, list[str]]:
        """A table's body and footer rows by their first cell."""
        return {row[0]: row[1:] for row in self.tables[table][1:]}

    def traces(self, chart: str) -> dict[str, dict[str, Any]]:
        """A chart's traces by name."""
        return {trace["name"]: trace for trace in self.islands[f"{chart}-data"]["data"]}


def read(path: Path) -> Page:
    """Parse the page at ``path``."""
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page
