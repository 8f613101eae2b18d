"""Cold start of the packaged app: ``python -m ops.coldstart [--bundle ZIP] [--rounds N]``.

Measured from the deployment zip (``make package`` writes ``dist/dev/deployment.zip``)
unzipped in a temporary directory, each figure in fresh interpreters, as Lambda starts
them: nothing may write bytecode (Lambda's code directory is read-only), and the path
holds the bundle, then what Lambda's Python runtime adds (boto3 and its dependencies,
linked from this interpreter's), then the standard library: no site-packages (where
optional dependencies such as blinker would be found) and not the project's checkout.

- **import**: the time to ``import app`` over the time to import its dependencies alone,
  i.e. every third-party module that importing app.py leaves loaded (found in one
  interpreter, then imported by name, in load order, in another, without the project's
  code). Interpreter start-up is in neither.
- **first call**: each scheduled function's first invocation (its module already
  imported) over a warm one, in one interpreter per round, against a moto server with
  the stage's tables created empty and the check's window open all day.

Each interpreter has ``_HANDLER`` set as Lambda sets it for the function measured, so
its init phase imports that function's check (``chalicelib.runner.prepare``). Each ratio
is the median over the rounds of one figure over the median of the other. The last line
printed is ``import <i.ii> x floor, first call <f.ff> x warm`` (each the worst scheduled
function's, wall clock). Each function's line also gives the ratio of the measured
interpreter's CPU time (``time.process_time``), which other jobs on a shared machine
disturb least; for the first call it leaves out the moto server's time, which runs in
this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ops.stages import PROJECT_DIR, REGION, stage_environment

DEFAULT_BUNDLE = PROJECT_DIR / "dist" / "dev" / "deployment.zip"
STAGE = "dev"
# The scheduled functions, by their handler's name in app.py.
SCHEDULED = ("check_stale_applications", "check_note_reminders", "check_repayment_reminders")
# The project's own code; anything else that importing app.py loads is a dependency.
PROJECT_MODULES = frozenset({"app", "chalicelib"})
WARM_CALLS = 5
# What Lambda's Python runtime puts on the path after the function's code.
LAMBDA_RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
# Every check's window open around the clock, so that each invocation runs its check.
ALL_DAY = {
    "STALE_APPLICATIONS_START": "00:00",
    "NOTE_REMINDERS_START": "00:00",
    "REPAYMENT_REMINDERS_START": "00:00",
    "BUSINESS_DAY_END": "23:59",
}
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}

# Run in the measured interpreters; argv[1] is the unzipped bundle.
_LOADED_BY_APP = """
import json, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
import app, chalicelib
print(json.dumps({"files": [app.__file__, chalicelib.__file__],
                  "loaded": [name for name in sys.modules if name not in before]}))
"""
_IMPORT_APP = """
import sys, time
sys.path.insert(0, sys.argv[1])
start, cpu = time.perf_counter(), time.process_time()
import app
print(time.perf_counter() - start, time.process_time() - cpu)
"""
_IMPORT_DEPENDENCIES = """
import importlib, json, sys, time
sys.path.insert(0, sys.argv[1])
names = json.loads(sys.stdin.read())
start, cpu = time.perf_counter(), time.process_time()
for name in names:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # a name only an importer registers (six.moves.*): loaded with its parent
print(time.perf_counter() - start, time.process_time() - cpu)
"""
_INVOCATIONS = """
import json, sys, time, uuid
from datetime import UTC, datetime, timedelta
sys.path.insert(0, sys.argv[1])
import app
handler, calls = getattr(app, sys.argv[2]), int(sys.argv[3])

class Context:
    function_name = sys.argv[2]
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:" + sys.argv[4] + ":123456789012:function:f"
    def __init__(self):
        self.aws_request_id = uuid.uuid4().hex
    def get_remaining_time_in_millis(self):
        return 300_000

times = []
for _ in range(calls):
    event = {"version": "0", "id": uuid.uuid4().hex, "detail-type": "Scheduled Event",
             "source": "aws.events", "account": "123456789012", "region": sys.argv[4],
             "time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
             "resources": [], "detail": {}}
    start, cpu = time.perf_counter(), time.process_time()
    handler(event, Context())
    times.append((time.perf_counter() - start, time.process_time() - cpu))
print("TIMES " + json.dumps(times))
"""


class ColdStartError(RuntimeError):
    """The bundle cannot be measured (the message says why)."""


@dataclass(frozen=True)
class Ratio:
    """A median figure over a median floor, both in seconds (wall clock); the same two
    in the measured interpreter's CPU time when measured."""

    measured: float
    floor: float
    cpu_measured: float | None = None
    cpu_floor: float | None = None

    @property
    def ratio(self) -> float:
        """How many times the floor the figure is."""
        return self.measured / self.floor

    @property
    def cpu_ratio(self) -> float | None:
        """The same ratio in CPU time (what other jobs on the machine disturb least)."""
        if self.cpu_measured is None or self.cpu_floor is None:
            return None
        return self.cpu_measured / self.cpu_floor


def _medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _pair(line: str) -> tuple[float, float]:
    wall, cpu = line.split()
    return float(wall), float(cpu)


def unzipped(bundle: Path, into: Path) -> Path:
    """The deployment zip extracted into ``into`` (Lambda's ``/var/task``)."""
    if not bundle.is_file():
        raise ColdStartError(f"{bundle} not found: run `make package` first")
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(into)
    return into


def lambda_runtime(into: Path) -> Path:
    """A directory standing for the runtime's packages: links to this interpreter's."""
    into.mkdir()
    for name in LAMBDA_RUNTIME:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ColdStartError(f"{name} is not installed here: it stands for the runtime's")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (into / source.name).symlink_to(source)
    return into


def function_environment(runtime: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The stage's function environment with fake credentials and no bytecode writes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.pop("DYNAMODB_ENDPOINT_URL", None)
    env["PYTHONPATH"] = str(runtime)
    env.update(stage_environment(STAGE))
    env.update(FAKE_CREDENTIALS)
    env.update({"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, **ALL_DAY})
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def _python(
    code: str, root: Path, env: Mapping[str, str], *args: str, stdin: str | None = None
) -> str:
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-S", "-c", code, str(root), *args],
        cwd=root,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ColdStartError(f"measuring failed:\n{result.stderr[-2000:]}")
    return result.stdout


def dependencies(root: Path, env: Mapping[str, str]) -> list[str]:
    """The third-party modules importing app.py loads, in the order it loads them."""
    found = json.loads(_python(_LOADED_BY_APP, root, env))
    outside = [f for f in found["files"] if not Path(f).is_relative_to(root)]
    if outside:
        raise ColdStartError(f"the project was imported from outside the bundle: {outside}")
    return [
        name
        for name in found["loaded"]
        if name.split(".")[0] not in sys.stdlib_module_names | PROJECT_MODULES
        and name not in sys.builtin_module_names
        and not name.startswith("_sysconfigdata")
    ]


def handler_environment(env: Mapping[str, str], function: str) -> dict[str, str]:
    """``env`` as Lambda sets it for ``function``: ``_HANDLER`` names its handler."""
    return {**env, "_HANDLER": f"app.{function}"}


def import_ratio(
    root: Path, env: Mapping[str, str], rounds: int, function: str
) -> tuple[Ratio, float]:
    """``function``'s ``import app`` over importing its dependencies alone, medians of
    ``rounds`` each.

    Also the median ``import app`` without the functions' settings, when the init phase
    makes no client: what the import costs before the clients are made.
    """
    env = handler_environment(env, function)
    names = json.dumps(dependencies(root, env))
    unset = {k: v for k, v in env.items() if k != "SENDER_EMAIL"}
    app, floor, without_clients = [], [], []
    for _ in range(rounds):
        app.append(_pair(_python(_IMPORT_APP, root, env)))
        floor.append(_pair(_python(_IMPORT_DEPENDENCIES, root, env, stdin=names)))
        without_clients.append(_pair(_python(_IMPORT_APP, root, unset))[0])
    (app_wall, app_cpu), (floor_wall, floor_cpu) = _medians(app), _medians(floor)
    return Ratio(app_wall, floor_wall, app_cpu, floor_cpu), statistics.median(without_clients)


def first_call_ratio(root: Path, env: Mapping[str, str], function: str, rounds: int) -> Ratio:
    """``function``'s first invocation over a warm one, medians over ``rounds`` interpreters."""
    first: list[tuple[float, float]] = []
    warm: list[tuple[float, float]] = []
    env = handler_environment(env, function)
    for _ in range(rounds):
        out = _python(_INVOCATIONS, root, env, function, str(1 + WARM_CALLS), REGION)
        times = [(wall, cpu) for wall, cpu in json.loads(out.rsplit("TIMES ", 1)[1])]
        first.append(times[0])
        warm.extend(times[1:])
    (first_wall, first_cpu), (warm_wall, warm_cpu) = _medians(first), _medians(warm)
    return Ratio(first_wall, warm_wall, first_cpu, warm_cpu)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def moto_server(runtime: Path) -> Iterator[str]:
    """A moto server on a free loopback port with the stage's tables and a verified sender."""
    import boto3
    from moto.server import ThreadedMotoServer  # a dev dependency, like this tool

    from chalicelib.config import Settings
    from ops.provisioning import provision

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        env = function_environment(runtime, {"DYNAMODB_ENDPOINT_URL": endpoint})
        env.pop("PYTHONPATH")
        saved = dict(os.environ)
        os.environ.update({**env, "AWS_ENDPOINT_URL": endpoint})
        try:
            settings = Settings.from_env()
            provision(settings, poll_seconds=0)
            ses = boto3.client("ses", region_name=settings.region)
            ses.verify_email_identity(EmailAddress=settings.sender_email)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        yield endpoint
    finally:
        server.stop()


@dataclass(frozen=True)
class ColdStart:
    """Each scheduled function's import and first-call figures; the worst of each."""

    imports: dict[str, tuple[Ratio, float]]
    calls: dict[str, Ratio]

    @property
    def import_ratio(self) -> float:
        """The worst function's ``import app`` over its dependencies alone."""
        return max(ratio.ratio for ratio, _ in self.imports.values())

    @property
    def first_call_ratio(self) -> float:
        """The worst function's first invocation over a warm one."""
        return max(call.ratio for call in self.calls.values())


def measure(bundle: Path = DEFAULT_BUNDLE, rounds: int = 7) -> ColdStart:
    """Both figures for every scheduled function, from ``bundle`` unzipped (``ColdStartError``
    when it is missing or a measuring interpreter fails)."""
    with tempfile.TemporaryDirectory(prefix="coldstart-") as scratch:
        root = unzipped(bundle, Path(scratch) / "task")
        runtime = lambda_runtime(Path(scratch) / "runtime")
        env = function_environment(runtime)
        imports = {f: import_ratio(root, env, rounds, f) for f in SCHEDULED}
        with moto_server(runtime) as endpoint:
            env = function_environment(
                runtime, {"DYNAMODB_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL": endpoint}
            )
            calls = {f: first_call_ratio(root, env, f, rounds) for f in SCHEDULED}
    return ColdStart(imports, calls)


def report(measured: ColdStart) -> list[str]:
    """One line per function and figure, then ``import <i> x floor, first call <f> x warm``."""
    lines = [
        f"{function}: import app {imported.measured * 1000:.0f} ms "
        f"({without_clients * 1000:.0f} ms without making its clients), "
        f"its dependencies alone {imported.floor * 1000:.0f} ms: {imported.ratio:.2f} x"
        f"{_cpu(imported, 0)}"
        for function, (imported, without_clients) in measured.imports.items()
    ]
    lines += [
        f"{function}: first call {call.measured * 1000:.1f} ms, warm "
        f"{call.floor * 1000:.1f} ms: {call.ratio:.2f} x{_cpu(call, 1)}"
        for function, call in measured.calls.items()
    ]
    lines.append(
        f"import {measured.import_ratio:.2f} x floor, "
        f"first call {measured.first_call_ratio:.2f} x warm"
    )
    return lines


def _cpu(ratio: Ratio, digits: int) -> str:
    """`` (CPU a / b ms: r x)`` when the CPU times were measured, else nothing."""
    if ratio.cpu_measured is None or ratio.cpu_floor is None:
        return ""
    return (
        f" (CPU {ratio.cpu_measured * 1000:.{digits}f} / {ratio.cpu_floor * 1000:.{digits}f} ms:"
        f" {ratio.cpu_ratio:.2f} x)"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure the bundle and print both ratios, the summary line last."""
    parser = argparse.ArgumentParser(prog="python -m ops.coldstart", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        measured = measure(args.bundle, args.rounds)
    except ColdStartError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report(measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
