"""The bytecode command and the cold-start method's floor (nothing here is timed)."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from ops import bytecode, coldstart
from ops.coldstart import ColdStartError, dependencies, function_environment, lambda_runtime

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def _package_dir(tmp_path: Path, runtime: str) -> Path:
    """What `chalice package` writes: a zip with app.py and a template naming ``runtime``."""
    with zipfile.ZipFile(tmp_path / "deployment.zip", "w") as archive:
        archive.writestr("app.py", "VALUE = 1\n")
    template = {
        "Resources": {
            "F": {"Type": "AWS::Serverless::Function", "Properties": {"Runtime": runtime}}
        }
    }
    (tmp_path / "sam.json").write_text(json.dumps(template))
    return tmp_path


def test_the_bytecode_command_precompiles_for_the_templates_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a package whose functions run on this interpreter's Python
    package = _package_dir(tmp_path, RUNTIME)

    # When the command runs on it
    status = bytecode.main([str(package)])

    # Then the zip holds app.py's bytecode and the command says what it did
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        names = set(archive.namelist())
    assert status == 0
    assert f"__pycache__/app.{sys.implementation.cache_tag}.pyc" in names
    assert f"1 modules precompiled for {RUNTIME}" in capsys.readouterr().out


def test_the_bytecode_command_fails_for_another_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a package whose functions run on another Python
    other = f"python3.{sys.version_info.minor + 1}"
    package = _package_dir(tmp_path, other)

    # Then the command fails with one error line naming the runtime
    assert bytecode.main([str(package)]) == 1
    assert capsys.readouterr().err.startswith(f"Error: the functions run on {other}")


def test_the_floor_is_every_third_party_module_the_app_loads(tmp_path: Path) -> None:
    # Given a bundle whose app imports the standard library, its own package and a vendored one
    root = tmp_path / "task"
    (root / "chalicelib").mkdir(parents=True)
    (root / "vendored" / "inner").mkdir(parents=True)
    (root / "app.py").write_text("import json, chalicelib, vendored.inner\n")
    (root / "chalicelib" / "__init__.py").write_text("import csv\n")
    (root / "vendored" / "__init__.py").write_text("")
    (root / "vendored" / "inner" / "__init__.py").write_text("import decimal\n")
    env = function_environment(lambda_runtime(tmp_path / "runtime"))

    # When the dependencies of `import app` are found
    found = dependencies(root, env)

    # Then they are the vendored modules, in load order, and nothing of the project or stdlib
    assert found == ["vendored", "vendored.inner"]


def test_measuring_without_a_package_says_to_build_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the bundle has not been built
    status = coldstart.main(["--bundle", str(tmp_path / "deployment.zip")])

    # Then it fails with the command that builds it
    assert status == 1
    assert "run `make package` first" in capsys.readouterr().err
    with pytest.raises(ColdStartError):
        coldstart.unzipped(tmp_path / "deployment.zip", tmp_path / "task")
