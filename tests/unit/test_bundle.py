"""The Lambda bundle: only the runtime package ships, and it needs nothing the bundle lacks.

The deployment zip is built by Chalice's own packager (``LambdaDeploymentPackager``, what
``chalice package`` and ``chalice deploy`` run), with one substitution so it works offline:
the dependency builder, which would ``pip download`` requirements.txt's wheels, records the
requirements file it is given and adds nothing. Every file the zip gets from the project
(``_add_app_files``: app.py, chalice's app module, chalicelib/) is therefore what a real
deployment carries; the wheels are checked against requirements.txt statically instead.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from io import StringIO
from pathlib import Path

import pytest
from chalice.deploy.packager import LambdaDeploymentPackager
from chalice.utils import UI, OSUtils

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "chalicelib"
# Installed for tests and tools only (requirements-dev.txt), absent from the Lambda bundle
# (click is what chalice.utils and the CLI need; chalice ships only chalice/app.py).
DEV_ONLY = (
    "click",
    "moto",
    "freezegun",
    "pytest",
    "cfnlint",
    "werkzeug",
    "responses",
    "django",
    "hypothesis",
    "flask",
    "mypy",
    "ruff",
    "pytest_benchmark",
    "plotly",
)
# The project's own packages that never ship: tooling, tests and the CRM's mirror app.
NOT_SHIPPED = ("ops", "tests", "crm_mirror")
# What the Lambda Python runtime provides without a requirement.
LAMBDA_RUNTIME = {"boto3", "botocore"}


class _RecordingDependencies:
    """Stands in for Chalice's pip-based dependency builder: no network, no wheels."""

    def __init__(self) -> None:
        self.requirements: list[Path] = []

    def build_site_packages(self, abi: str, requirements_filepath: str, target: str) -> None:
        """Record which requirements file the packager would install; install nothing."""
        self.requirements.append(Path(requirements_filepath))


class _PackagerToDirectory(LambdaDeploymentPackager):
    """Chalice's packager, writing its zip to ``out`` instead of ``.chalice/deployments``."""

    def __init__(self, out: Path, dependencies: _RecordingDependencies) -> None:
        # A stand-in for chalice's DependencyBuilder: it records instead of building.
        super().__init__(OSUtils(), dependencies, UI(out=StringIO()))  # type: ignore[arg-type]
        self._out = out

    def deployment_package_filename(self, project_dir: str, python_version: str) -> str:
        """The zip's path: under the test's temporary directory."""
        return str(self._out / f"deployment-{python_version}.zip")


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], list[Path]]:
    """The names in the deployment zip, and the requirements files it was built from."""
    dependencies = _RecordingDependencies()
    packager = _PackagerToDirectory(tmp_path_factory.mktemp("package"), dependencies)
    zip_path = packager.create_deployment_package(str(ROOT), "python3.11")
    with zipfile.ZipFile(zip_path) as bundle:
        return set(bundle.namelist()), dependencies.requirements


def _imports(path: Path) -> Iterator[str]:
    """The absolute modules ``path`` imports, at any depth, except under ``TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _runtime_sources() -> list[Path]:
    return [ROOT / "app.py", *sorted(RUNTIME.rglob("*.py"))]


def _requirements() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_normal(line.split("==", 1)[0].split("[", 1)[0]))
    return names


def _normal(distribution: str) -> str:
    return distribution.lower().replace("_", "-").replace(".", "-")


def test_the_deployment_package_holds_the_runtime_and_no_tooling(
    packaged: tuple[set[str], list[Path]],
) -> None:
    # Given the zip Chalice's packager builds from this project
    names, requirements = packaged

    # Then it holds the handlers and every file of chalicelib (templates included) ...
    expected = {
        f"chalicelib/{path.relative_to(RUNTIME).as_posix()}"
        for path in RUNTIME.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "app.py" in names
    assert expected <= names, sorted(expected - names)
    assert any(name.startswith("chalicelib/templates/") for name in names)
    # ... no tooling, test or mirror module ...
    leaked = sorted(n for n in names if n.split("/", 1)[0] in NOT_SHIPPED)
    assert leaked == []
    # ... of Chalice itself only the app module (chalice.utils, which needs click, stays out) ...
    chalice_files = {n for n in names if n.startswith("chalice/")}
    assert chalice_files == {"chalice/__init__.py", "chalice/app.py"}
    # ... and its third-party packages are requirements.txt's, which lists nothing dev-only.
    assert requirements == [ROOT / "requirements.txt"]
    assert _requirements().isdisjoint(_normal(name) for name in DEV_ONLY)


def test_the_runtime_package_imports_nothing_from_the_tooling() -> None:
    # Given every import of every chalicelib module (inside functions too)
    found = {
        (path.relative_to(ROOT).as_posix(), module)
        for path in sorted(RUNTIME.rglob("*.py"))
        for module in _imports(path)
        if module.split(".")[0] in NOT_SHIPPED
    }

    # Then none of them reaches ops, tests or crm_mirror
    assert found == set()


def test_the_shipped_code_imports_only_what_the_bundle_carries() -> None:
    # Given what the zip holds (app.py, chalice.app, chalicelib), requirements.txt's
    # distributions and the Lambda runtime's boto3
    distributions = packages_distributions()
    allowed = _requirements() | LAMBDA_RUNTIME
    shipped_chalice = {"chalice", "chalice.app"}

    # When every import of the shipped sources is resolved to where it comes from
    missing = set()
    for path in _runtime_sources():
        for module in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in {"chalicelib", "app"}:
                continue
            if top == "chalice":
                # `from chalice import Cron` names a class; only modules must be in the zip.
                if module not in shipped_chalice and _is_module(module):
                    missing.add((path.name, module))
                continue
            owners = {_normal(d) for d in distributions.get(top, [top])}
            if owners.isdisjoint(allowed):
                missing.add((path.name, module))

    # Then each is the standard library, the zip itself, a requirement or the runtime's
    assert missing == set()


def test_the_lambda_entry_point_imports_no_dev_only_package() -> None:
    # When the handlers' module is imported in a fresh interpreter, as Lambda does
    code = "import json, sys, app; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(  # noqa: S603 - a fixed command line, our own interpreter
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}

    # Then nothing from the dev requirements (or the tooling package) is loaded
    assert loaded.isdisjoint(DEV_ONLY), sorted(loaded & set(DEV_ONLY))
    assert loaded.isdisjoint(NOT_SHIPPED), sorted(loaded & set(NOT_SHIPPED))
    assert {"pynamodb", "jinja2", "aws_lambda_powertools", "chalicelib"} <= loaded
