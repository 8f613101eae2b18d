"""The precompiled bundle: bytecode of every module, for the runtime's Python, that imports.

The zip is built by Chalice's own packager, as in test_bundle.py, with a stand-in for its
pip-based dependency builder that vendors one small package instead of downloading
requirements.txt's wheels: the project's files are what a real deployment carries, and the
vendored package stands for every dependency.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from chalice.config import Config
from chalice.deploy.packager import LambdaDeploymentPackager
from chalice.utils import UI, OSUtils

from ops.bytecode import BytecodeError, cache_tag, precompile, runtime_of

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = Config().lambda_python_version
FAKE_AWS = {
    "AWS_REGION": "ap-southeast-2",
    "AWS_DEFAULT_REGION": "ap-southeast-2",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


class _VendoringDependencies:
    """Stands in for Chalice's dependency builder: vendors one tiny package, offline."""

    def build_site_packages(self, abi: str, requirements_filepath: str, target: str) -> None:
        """Write ``vendored_dep`` (a package and a submodule) where the wheels would go."""
        package = Path(target) / "vendored_dep"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("from vendored_dep.sub import VALUE\n")
        (package / "sub.py").write_text("VALUE = 'vendored'\n")


class _PackagerToDirectory(LambdaDeploymentPackager):
    """Chalice's packager, writing its zip to ``out`` instead of ``.chalice/deployments``."""

    def __init__(self, out: Path) -> None:
        # A stand-in for chalice's DependencyBuilder: it vendors a fixed package.
        super().__init__(OSUtils(), _VendoringDependencies(), UI(out=StringIO()))  # type: ignore[arg-type]
        self._out = out

    def deployment_package_filename(self, project_dir: str, python_version: str) -> str:
        """The zip's path: under the test's temporary directory."""
        return str(self._out / f"deployment-{python_version}.zip")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployment zip Chalice's packager builds, precompiled for Chalice's runtime."""
    packager = _PackagerToDirectory(tmp_path_factory.mktemp("package"))
    path = Path(packager.create_deployment_package(str(ROOT), RUNTIME))
    precompile(path, RUNTIME)
    return path


def _names(bundle: Path) -> set[str]:
    with zipfile.ZipFile(bundle) as archive:
        return set(archive.namelist())


def _bytecode_of(source: str, tag: str) -> str:
    """``pkg/mod.py`` -> ``pkg/__pycache__/mod.<tag>.pyc``."""
    folder, slash, filename = source.rpartition("/")
    return f"{folder}{slash}__pycache__/{filename.removesuffix('.py')}.{tag}.pyc"


def _extracted(bundle: Path, into: Path) -> Path:
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(into)
    return into


def test_chalice_targets_the_runtime_of_the_interpreter_that_packages() -> None:
    # Given the runtime `chalice package` writes into the template (from its interpreter)
    # Then this interpreter writes bytecode that runtime loads
    assert cache_tag(RUNTIME) == sys.implementation.cache_tag


def test_the_bundle_holds_unchecked_bytecode_of_every_module_for_its_runtime(
    bundle: Path,
) -> None:
    # Given the precompiled zip
    names = _names(bundle)
    sources = sorted(name for name in names if name.endswith(".py"))

    # Then every module (app.py, chalicelib, the vendored package) keeps its source and
    # has bytecode tagged with the runtime's version
    tag = cache_tag(RUNTIME)
    expected = {_bytecode_of(source, tag) for source in sources}
    assert {"app.py", "chalicelib/runner.py", "vendored_dep/sub.py"} <= set(sources)
    assert expected <= names, sorted(expected - names)
    assert {name for name in names if name.endswith(".pyc")} == expected
    # ... compiled by this runtime's Python, as unchecked hash-based bytecode (flags 0b01)
    with zipfile.ZipFile(bundle) as archive:
        headers = {archive.read(name)[:8] for name in expected}
    assert headers == {importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")}


def test_the_unzipped_bundle_imports_the_app_from_its_bytecode(
    bundle: Path, tmp_path: Path
) -> None:
    # Given the zip unzipped, and a vendored module's source changed after compiling
    root = _extracted(bundle, tmp_path / "task")
    (root / "vendored_dep" / "sub.py").write_text("raise ImportError('source compiled')\n")
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))

    # When a fresh interpreter imports the handlers' module from it, as Lambda does
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import app, vendored_dep; "
        "print(json.dumps([app.__file__, vendored_dep.VALUE]))"
    )
    result = subprocess.run(  # noqa: S603 - a fixed command line, our own interpreter
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **FAKE_AWS, "PYTHONDONTWRITEBYTECODE": ""},
    )

    # Then the app comes from the bundle, the modules from their bytecode (the changed
    # source is never read), and no bytecode was written beside it
    app_file, value = json.loads(result.stdout)
    assert Path(app_file) == root / "app.py"
    assert value == "vendored"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before


def test_the_runtime_is_read_from_the_packaged_template(tmp_path: Path) -> None:
    # Given a template whose functions all run on one Python runtime, and one that mixes two
    def template(*runtimes: str) -> Path:
        path = tmp_path / f"sam-{len(runtimes)}.json"
        resources = {
            f"F{i}": {"Type": "AWS::Serverless::Function", "Properties": {"Runtime": runtime}}
            for i, runtime in enumerate(runtimes)
        }
        resources["Table"] = {"Type": "AWS::DynamoDB::Table", "Properties": {}}
        path.write_text(json.dumps({"Resources": resources}))
        return path

    # Then the runtime is the functions', and a mixed template is refused
    assert runtime_of(template("python3.12", "python3.12")) == "python3.12"
    with pytest.raises(BytecodeError, match="expected one runtime"):
        runtime_of(template("python3.11", "python3.12", "python3.12"))


def test_it_refuses_to_compile_for_another_python_version(tmp_path: Path) -> None:
    # Given a bundle whose functions run on a Python other than this interpreter's
    other = f"python3.{sys.version_info.minor + 1}"
    path = tmp_path / "deployment.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("app.py", "")

    # Then it refuses, naming both versions, and leaves the zip as it was
    with pytest.raises(BytecodeError, match=rf"run on {other} but this interpreter is"):
        precompile(path, other)
    assert _names(path) == {"app.py"}
