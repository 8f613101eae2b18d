"""Compile the bundle's email templates to Python: ``python -m ops.templates PACKAGE_DIR``.

Jinja compiles a template to Python source, then to bytecode, the first time it is
rendered: 4-5 ms a template (a note reminder renders three: its HTML, its text and
their base), paid by the first run of every container that sends. This adds the
templates compiled by the mailer's own environment (its options, its filters) to
``PACKAGE_DIR/deployment.zip`` as ``chalicelib/templates_compiled/tmpl_<sha1>.py``,
where the mailer loads them from (``mailer.COMPILED_TEMPLATES``, Jinja's
``ModuleLoader``); ``ops.bytecode``, which runs next, compiles them like any module.
The templates are compiled from the checkout, so the step refuses a bundle whose
templates are not the checkout's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

from jinja2 import ModuleLoader

from chalicelib import mailer

BUNDLE = "deployment.zip"
ROOT = Path(mailer.__file__).resolve().parents[1]
SOURCES = mailer.TEMPLATES.relative_to(ROOT).as_posix() + "/"
COMPILED = mailer.COMPILED_TEMPLATES.relative_to(ROOT).as_posix() + "/"


class TemplatesError(RuntimeError):
    """The bundle's templates cannot be compiled (the message says why)."""


def compile_templates(bundle: Path) -> int:
    """Rewrite ``bundle`` with its templates compiled; how many templates were compiled."""
    with zipfile.ZipFile(bundle) as source:
        entries = [
            (info, source.read(info))
            for info in source.infolist()
            if not info.filename.startswith(COMPILED)
        ]
    shipped = {
        info.filename.removeprefix(SOURCES): (info, data)
        for info, data in entries
        if info.filename.startswith(SOURCES) and not info.is_dir()
    }
    environment = mailer._environment.__wrapped__()
    names = environment.list_templates()
    different = sorted(
        set(shipped) ^ set(names)
        | {n for n in names if n in shipped and shipped[n][1] != _source(n)}
    )
    if different:
        raise TemplatesError(
            f"{bundle}: its templates are not the checkout's ({', '.join(different)}): "
            "package again"
        )
    with tempfile.TemporaryDirectory(prefix="templates-") as scratch:
        environment.compile_templates(scratch, zip=None, ignore_errors=False)
        written = bundle.with_suffix(".zip.tmp")
        with zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED) as target:
            for info, data in entries:
                target.writestr(info, data)
            for name in sorted(names):
                module = ModuleLoader.get_module_filename(name)
                compiled = zipfile.ZipInfo(f"{COMPILED}{module}", shipped[name][0].date_time)
                compiled.external_attr = 0o100644 << 16
                compiled.compress_type = zipfile.ZIP_DEFLATED
                target.writestr(compiled, (Path(scratch) / module).read_bytes())
        written.replace(bundle)
    return len(names)


def _source(name: str) -> bytes:
    return (mailer.TEMPLATES / name).read_bytes()


def main(argv: list[str] | None = None) -> int:
    """Compile ``PACKAGE_DIR/deployment.zip``'s templates into it."""
    parser = argparse.ArgumentParser(prog="python -m ops.templates", description=__doc__)
    parser.add_argument("package_dir", type=Path, help="what `chalice package` wrote")
    args = parser.parse_args(argv)
    bundle: Path = args.package_dir / BUNDLE
    try:
        count = compile_templates(bundle)
    except TemplatesError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{bundle}: {count} email templates compiled into {COMPILED}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
