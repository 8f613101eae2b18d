"""The stages of ``.chalice/config.json``: their names and the environment of their functions.

One loader for the CLI (``--stage``), the generators (``ops.infra.load_stage``) and the
tests, so they all read a stage the way Chalice gives it to the deployed functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
CHALICE_CONFIG = PROJECT_DIR / ".chalice" / "config.json"
# Every stage's region unless AWS_DEFAULT_REGION says otherwise (the Makefile reads it here).
REGION = "ap-southeast-2"


class StageError(ValueError):
    """The configuration has no such stage (the message lists the known ones)."""


def read_config(config: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The path and the parsed content of ``.chalice/config.json`` (or ``config``)."""
    path = config or CHALICE_CONFIG
    data: dict[str, Any] = json.loads(path.read_text())
    return path, data


def stage_names(config: Path | None = None) -> list[str]:
    """The stages declared in ``.chalice/config.json`` (or ``config``)."""
    return sorted(read_config(config)[1].get("stages", {}))


def stage_environment(name: str, config: Path | None = None) -> dict[str, str]:
    """The environment variables ``.chalice/config.json`` gives stage ``name``'s functions.

    The stage's own variables override the top-level ones, as Chalice merges them.
    """
    _, data = read_config(config)
    stages = data.get("stages", {})
    if name not in stages:
        raise StageError(f"unknown stage {name!r} (known: {', '.join(sorted(stages))})")
    env = {str(k): str(v) for k, v in data.get("environment_variables", {}).items()}
    env.update({str(k): str(v) for k, v in stages[name].get("environment_variables", {}).items()})
    return env


def stage_region(name: str, config: Path | None = None) -> str:
    """The AWS region of stage ``name``: its ``aws_region`` in the configuration, or ``REGION``.

    Chalice itself takes the region from the environment; this is where the ops CLI
    finds a stage's tables when the environment names no region.
    """
    _, data = read_config(config)
    stages = data.get("stages", {})
    if name not in stages:
        raise StageError(f"unknown stage {name!r} (known: {', '.join(sorted(stages))})")
    return str(stages[name].get("aws_region") or data.get("aws_region") or REGION)
