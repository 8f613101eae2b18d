"""The Lambda bundle: what `import app` pulls in must be in requirements.txt (or the runtime)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Installed for tests and tools only (requirements-dev.txt), absent from the Lambda bundle.
DEV_ONLY = ("click", "moto", "freezegun", "pytest", "cfnlint", "werkzeug", "responses", "django")


def test_the_lambda_entry_point_imports_no_dev_only_package() -> None:
    # When the handlers' module is imported in a fresh interpreter, as Lambda does
    code = "import json, sys, app; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(  # noqa: S603 - a fixed command line, our own interpreter
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}

    # Then nothing from the dev requirements (or the operator-only modules) is loaded
    assert loaded.isdisjoint(DEV_ONLY), sorted(loaded & set(DEV_ONLY))
    assert "ops.cli" not in json.loads(result.stdout)
    assert {"pynamodb", "jinja2", "aws_lambda_powertools", "chalicelib"} <= loaded
