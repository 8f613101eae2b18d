"""Precompile the Lambda bundle: ``python -m ops.bytecode PACKAGE_DIR``.

``chalice package`` zips sources only, so every cold start compiles app.py, chalicelib
and every vendored dependency again (botocore alone is some 2,000 files). This rewrites
``PACKAGE_DIR/deployment.zip`` with a ``__pycache__/<module>.cpython-3XX.pyc`` next to
every ``.py`` (which stay, for tracebacks), compiled with ``unchecked-hash`` invalidation:
Lambda's file timestamps are not the zip's, and the bundle never changes once deployed,
so the runtime loads the bytecode without checking it against its source.

The bytecode must be for the runtime's Python version. Chalice picks that runtime from the
interpreter that runs ``chalice package`` (``chalice.config.Config.lambda_python_version``)
and writes it into ``sam.json``; the version is read back from there, and an interpreter
of another version refuses to compile rather than ship bytecode the runtime would ignore.
"""

from __future__ import annotations

import argparse
import compileall
import json
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from py_compile import PycInvalidationMode

BUNDLE = "deployment.zip"
TEMPLATE = "sam.json"
FUNCTION_TYPES = frozenset({"AWS::Serverless::Function", "AWS::Lambda::Function"})
_RUNTIME = re.compile(r"python(\d+)\.(\d+)")


class BytecodeError(RuntimeError):
    """The bundle cannot be precompiled for its runtime (the message says why)."""


@dataclass(frozen=True)
class Precompiled:
    """What :func:`precompile` did to one deployment zip."""

    runtime: str
    modules: int
    size_before: int
    size_after: int


def runtime_of(template: Path) -> str:
    """The one Python runtime (``python3.X``) every function of a SAM template runs on."""
    resources = json.loads(template.read_text()).get("Resources", {})
    runtimes = {
        str(resource.get("Properties", {}).get("Runtime"))
        for resource in resources.values()
        if resource.get("Type") in FUNCTION_TYPES
    }
    if len(runtimes) != 1:
        raise BytecodeError(
            f"{template}: expected one runtime for every function, found {sorted(runtimes)}"
        )
    (runtime,) = runtimes
    if not _RUNTIME.fullmatch(runtime):
        raise BytecodeError(f"{template}: runtime {runtime!r} is not a CPython runtime")
    return runtime


def cache_tag(runtime: str) -> str:
    """The ``__pycache__`` tag of ``runtime``'s bytecode: ``python3.11`` -> ``cpython-311``."""
    match = _RUNTIME.fullmatch(runtime)
    if match is None:
        raise BytecodeError(f"runtime {runtime!r} is not a CPython runtime")
    return f"cpython-{match[1]}{match[2]}"


def require_interpreter(runtime: str) -> None:
    """Refuse unless this interpreter writes bytecode ``runtime`` loads."""
    own = sys.implementation.cache_tag
    if own != cache_tag(runtime):
        raise BytecodeError(
            f"the functions run on {runtime} but this interpreter is "
            f"{sys.implementation.name} {sys.version.split()[0]} ({own}): its bytecode would "
            f"be ignored at every cold start. Run `chalice package` and this step with a "
            f"{runtime.replace('python', 'Python ')} interpreter."
        )


def precompile(bundle: Path, runtime: str) -> Precompiled:
    """Rewrite ``bundle`` with unchecked-hash bytecode of every ``.py`` it holds.

    Entries already in the zip are copied as they are (attributes and dates included);
    each ``.pyc`` takes its source's date. Fails, naming the files, when any source does
    not compile: such a module could not be imported on the runtime either.
    """
    require_interpreter(runtime)
    size_before = bundle.stat().st_size
    with tempfile.TemporaryDirectory(prefix="bytecode-") as scratch:
        root = Path(scratch)
        with zipfile.ZipFile(bundle) as source:
            source.extractall(root)
            entries = [(info, source.read(info)) for info in source.infolist()]
        sources = {info.filename: info for info, _ in entries if info.filename.endswith(".py")}
        failed = _compile_tree(root)
        if failed:
            raise BytecodeError(f"{bundle}: these files do not compile: {', '.join(failed)}")
        compiled = {
            path.relative_to(root).as_posix(): path
            for path in sorted(root.rglob(f"__pycache__/*.{cache_tag(runtime)}.pyc"))
        }
        written = bundle.with_suffix(".zip.tmp")
        with zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED) as target:
            for info, data in entries:
                if info.filename not in compiled:
                    target.writestr(info, data)
            for name, path in compiled.items():
                target.writestr(_pyc_info(name, sources), path.read_bytes())
        written.replace(bundle)
    return Precompiled(runtime, len(compiled), size_before, bundle.stat().st_size)


def _compile_tree(root: Path) -> list[str]:
    """Compile every ``.py`` under ``root``; the relative paths of those that fail."""
    failed: list[str] = []
    for path in sorted(root.rglob("*.py")):
        ok = compileall.compile_file(
            path,
            quiet=2,
            stripdir=str(root),
            invalidation_mode=PycInvalidationMode.UNCHECKED_HASH,
        )
        if not ok:
            failed.append(path.relative_to(root).as_posix())
    return failed


def _pyc_info(name: str, sources: dict[str, zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The zip entry of ``pkg/__pycache__/mod.cpython-3XX.pyc``: its source's date, 0644."""
    folder, _, filename = name.rpartition("__pycache__/")
    source = sources.get(f"{folder}{filename.split('.', 1)[0]}.py")
    info = zipfile.ZipInfo(name, source.date_time if source else (1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def main(argv: list[str] | None = None) -> int:
    """Precompile ``PACKAGE_DIR/deployment.zip`` for the runtime ``PACKAGE_DIR/sam.json`` names."""
    parser = argparse.ArgumentParser(prog="python -m ops.bytecode", description=__doc__)
    parser.add_argument("package_dir", type=Path, help="what `chalice package` wrote")
    args = parser.parse_args(argv)
    package_dir: Path = args.package_dir
    try:
        done = precompile(package_dir / BUNDLE, runtime_of(package_dir / TEMPLATE))
    except BytecodeError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{package_dir / BUNDLE}: {done.modules} modules precompiled for {done.runtime} "
        f"({done.size_before / 1e6:.1f} MB -> {done.size_after / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
