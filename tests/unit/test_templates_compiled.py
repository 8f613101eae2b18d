"""The bundle's email templates, compiled at package time, render what the sources render."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from chalicelib import mailer
from chalicelib.mailer import Recipient, render
from ops.templates import COMPILED, SOURCES, TemplatesError, compile_templates, main
from tests.support import LENDER
from tests.unit.test_templates import TEMPLATE_CASES

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = Recipient(id="bdm-1", name='Zoë <b>"&"</b>', email="zoe@example.com")
# Every kind's sample, and one whose CRM text must be escaped in the HTML part.
CASES: list[tuple[str, dict[str, Any]]] = [
    *TEMPLATE_CASES.items(),
    ("note_reminder", {**TEMPLATE_CASES["note_reminder"], "title": "<script>x</script> & co"}),
]
# Renders CASES (stdin) with the chalicelib found first on the path: the unzipped bundle's.
_RENDER = """
import json, pickle, sys
sys.path.insert(0, sys.argv[1])
from chalicelib import mailer
cases, to, lender = pickle.loads(sys.stdin.buffer.read())
emails = [mailer.render(t, to, "Subject <&>", c, lender=lender) for t, c in cases]
print(json.dumps([type(mailer._environment().loader).__name__,
                  [[e.subject, e.text, e.html] for e in emails]]))
"""


def _bundle(path: Path) -> Path:
    """A zip holding chalicelib as Chalice packages it (its templates included)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted((ROOT / "chalicelib").rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                archive.write(file, file.relative_to(ROOT).as_posix())
    return path


def test_the_compiled_templates_render_what_the_sources_render(tmp_path: Path) -> None:
    # Given a bundle whose templates were compiled, unzipped
    bundle = _bundle(tmp_path / "deployment.zip")
    assert compile_templates(bundle) == len(list(mailer.TEMPLATES.iterdir()))
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(tmp_path / "task")

    # When a fresh interpreter renders every kind from the bundle
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", _RENDER, str(tmp_path / "task")],
        # Pickled: the samples hold the checks' own row types, which the bundle has too.
        input=pickle.dumps([CASES, HOSTILE, LENDER]),
        capture_output=True,
        check=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    loader, emails = json.loads(result.stdout.decode("utf-8"))

    # Then it loaded the compiled templates, and each email is the one the sources render
    assert loader == "ModuleLoader"
    expected = [render(t, HOSTILE, "Subject <&>", c, lender=LENDER) for t, c in CASES]
    assert emails == [[e.subject, e.text, e.html] for e in expected]
    assert "&lt;script&gt;" in emails[-1][2]


def test_compiling_again_gives_the_same_bundle(tmp_path: Path) -> None:
    # Given a bundle compiled once
    bundle = _bundle(tmp_path / "deployment.zip")
    compile_templates(bundle)
    once = bundle.read_bytes()

    # When it is compiled again
    compile_templates(bundle)

    # Then nothing changed: one module per template, byte for byte as before
    assert bundle.read_bytes() == once
    with zipfile.ZipFile(bundle) as archive:
        modules = [n for n in archive.namelist() if n.startswith(COMPILED)]
    assert len(modules) == len(set(modules)) == len(list(mailer.TEMPLATES.iterdir()))


def test_a_bundle_with_other_templates_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a bundle whose base template is not the checkout's
    bundle = _bundle(tmp_path / "deployment.zip")
    changed = tmp_path / "changed.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(changed, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info, b"{{ other }}" if info.filename == f"{SOURCES}base.txt" else data)
    changed.replace(tmp_path / "deployment.zip")

    # When its templates are compiled, then it is refused, naming the template
    with pytest.raises(TemplatesError, match=r"not the checkout's \(base\.txt\)"):
        compile_templates(tmp_path / "deployment.zip")
    assert main([str(tmp_path)]) == 1
    assert "base.txt" in capsys.readouterr().err
