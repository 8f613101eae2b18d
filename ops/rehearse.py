"""`make deploy` rehearsed against a local moto server (``make deploy-rehearsal``).

The rehearsal copies the project into a temporary directory (Chalice writes what it
deployed into ``.chalice/deployed/``, which must never dirty the repository), starts a
moto server on a free loopback port, and runs there, with fake credentials and every
AWS call sent to the server through ``AWS_ENDPOINT_URL`` (botocore 1.31+ reads it for
every service; Chalice's own clients included):

1. ``make deploy STAGE=dev`` itself (the recipe, not a copy of it): ``policy --check``,
   ``provision``, ``chalice deploy --stage dev`` and ``fanout-on``;
2. ``make deploy STAGE=dev`` again, which must change nothing;
3. ``chalice delete --stage dev``.

After each step it takes a :class:`Deployed` snapshot of the server with boto3, and
:func:`expected_functions` / :func:`expected_rules` say what the Chalice app registers and
``.chalice/config.json`` configures; tests/rehearsal compares them.

What moto's server does differently from AWS, and what the rehearsal does about it:

- Lambda's CreateFunction needs no Docker on moto (only Invoke does), functions are
  ``Active`` at once and IAM roles need no propagation, so Chalice's waiters and its
  retries on a role that cannot be assumed yet return at once: the rehearsal proves the
  calls and their parameters, not AWS's timing.
- moto 5.2.5's ListEventSourceMappings filters on ``FunctionName`` by comparing it with
  the string CreateEventSourceMapping was given; AWS accepts a name or an ARN for both.
  Chalice creates the fan-out consumer's mapping with the function's ARN, and
  ``fanout-on`` lists it by name, so on an unpatched server ``fanout-on`` finds nothing.
  :func:`serve` runs moto's server with that filter resolving the name to the function's
  ARN, as AWS does (:func:`list_event_source_mappings_by_name_or_arn`); nothing else of
  moto or of the project is changed.
- Chalice packages the dependencies for Lambda's platform with ``pip download``, so the
  rehearsal needs the package index that ``make install`` uses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from chalice.app import Chalice, CloudWatchEventConfig, ScheduledEventConfig
from chalice.constants import DEFAULT_LAMBDA_MEMORY_SIZE, DEFAULT_LAMBDA_TIMEOUT

from ops.stages import PROJECT_DIR, REGION, read_config

STAGE = "dev"
START_TIMEOUT = 30.0
STEP_TIMEOUT = 600.0
# What the copy leaves out: environments, caches, outputs, and Chalice's deployed state.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "__pycache__",
    ".*_cache",
    "deployed",
    "deployments",
    "mutants",
    "outbox",
    ".demo",
    "dist",
    "htmlcov",
    ".benchmarks",
    ".coverage",
)


class RehearsalError(RuntimeError):
    """A step of the rehearsal failed or the server did not start (the message says why)."""


# --- What the app registers and the configuration asks for ---------------------------


@dataclass(frozen=True)
class ExpectedFunction:
    """A function as the Chalice app registers it and ``.chalice/config.json`` configures it."""

    name: str  # as deployed: ``<app>-<stage>-<function>``
    handler: str
    memory: int
    timeout: int
    policy: dict[str, Any]  # the stage's policy file for this function, parsed


@dataclass(frozen=True)
class ExpectedRule:
    """The EventBridge rule Chalice makes for a schedule or an event pattern."""

    function: str  # the deployed name of the function it targets
    schedule_expression: str | None
    event_pattern: dict[str, Any] | None


def _registered(app: Chalice) -> dict[str, str]:
    """Every function the app registers (Chalice deploys one per handler): name -> handler."""
    if app.routes:
        raise RehearsalError("the app has API routes: the rehearsal does not check API Gateway")
    handlers = {function.name: function.handler_string for function in app.pure_lambda_functions}
    handlers |= {source.name: source.handler_string for source in app.event_sources}
    return handlers


def _lookup(data: Mapping[str, Any], stage: str, function: str, key: str) -> Any:
    """``key`` for one function as Chalice looks it up: the stage's per-function settings,
    the stage's, the top level's per-function settings, then the top level's."""
    stage_data = data.get("stages", {}).get(stage, {})
    for scope in (
        stage_data.get("lambda_functions", {}).get(function, {}),
        stage_data,
        data.get("lambda_functions", {}).get(function, {}),
        data,
    ):
        if scope.get(key) is not None:
            return scope[key]
    return None


def expected_functions(
    app: Chalice, stage: str = STAGE, config: Path | None = None
) -> dict[str, ExpectedFunction]:
    """The functions ``chalice deploy --stage`` must leave, by deployed name."""
    path, data = read_config(config)
    expected = {}
    for name, handler in _registered(app).items():
        deployed = f"{data['app_name']}-{stage}-{name}"
        policy_file = _lookup(data, stage, name, "iam_policy_file") or f"policy-{stage}.json"
        memory = _lookup(data, stage, name, "lambda_memory_size")
        timeout = _lookup(data, stage, name, "lambda_timeout")
        expected[deployed] = ExpectedFunction(
            name=deployed,
            handler=handler,
            memory=int(DEFAULT_LAMBDA_MEMORY_SIZE if memory is None else memory),
            timeout=int(DEFAULT_LAMBDA_TIMEOUT if timeout is None else timeout),
            policy=json.loads((path.parent / str(policy_file)).read_text()),
        )
    return expected


def expected_rules(
    app: Chalice, stage: str = STAGE, config: Path | None = None
) -> dict[str, ExpectedRule]:
    """The EventBridge rules of the app's schedules and event patterns, by target function."""
    _, data = read_config(config)
    rules = {}
    for source in app.event_sources:
        function = f"{data['app_name']}-{stage}-{source.name}"
        if isinstance(source, ScheduledEventConfig):
            expression = source.schedule_expression
            text = expression if isinstance(expression, str) else expression.to_string()
            rules[function] = ExpectedRule(function, text, None)
        elif isinstance(source, CloudWatchEventConfig):
            rules[function] = ExpectedRule(function, None, source.event_pattern)
    return rules


# --- What the server holds -----------------------------------------------------------


@dataclass(frozen=True)
class DeployedFunction:
    """A function's deployed configuration (without the times that change on every update)."""

    arn: str
    version: str
    versions: tuple[str, ...]  # every version Lambda holds: "$LATEST" unless one was published
    handler: str
    memory: int
    timeout: int
    role: str
    code_sha256: str
    environment: dict[str, str]


@dataclass(frozen=True)
class DeployedRule:
    """An EventBridge rule and the ARNs it targets."""

    arn: str
    schedule_expression: str | None
    event_pattern: dict[str, Any] | None
    targets: tuple[str, ...]


@dataclass(frozen=True)
class DeployedRole:
    """An IAM role: its id (a new one if it was recreated) and its policies."""

    role_id: str
    arn: str
    inline_policies: dict[str, dict[str, Any]]
    attached_policies: tuple[str, ...]


@dataclass(frozen=True)
class DeployedMapping:
    """A Lambda event source mapping."""

    function_arn: str
    event_source_arn: str
    response_types: tuple[str, ...]


@dataclass(frozen=True)
class Deployed:
    """Everything of the stage the server holds at one moment."""

    functions: dict[str, DeployedFunction] = field(default_factory=dict)
    rules: dict[str, DeployedRule] = field(default_factory=dict)
    roles: dict[str, DeployedRole] = field(default_factory=dict)
    mappings: dict[str, DeployedMapping] = field(default_factory=dict)
    tables: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[Any]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page[key]


def snapshot(endpoint: str, region: str = REGION) -> Deployed:
    """Read the functions, rules, roles, event source mappings, tables and queues."""
    session = boto3.session.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's server takes any credentials
        region_name=region,
    )

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint)  # type: ignore[call-overload]

    # One read of everything the checks compare, so a deploy, a redeploy and a delete are
    # each compared as one snapshot; each service's paging stays beside what it reads.
    lambdas, events, iam = client("lambda"), client("events"), client("iam")
    functions = {}
    for summary in _pages(lambdas, "list_functions", "Functions"):
        name = summary["FunctionName"]
        config = lambdas.get_function_configuration(FunctionName=name)
        versions = _pages(lambdas, "list_versions_by_function", "Versions", FunctionName=name)
        functions[name] = DeployedFunction(
            arn=config["FunctionArn"],
            version=config["Version"],
            versions=tuple(version["Version"] for version in versions),
            handler=config["Handler"],
            memory=config["MemorySize"],
            timeout=config["Timeout"],
            role=config["Role"],
            code_sha256=config["CodeSha256"],
            environment=dict(config.get("Environment", {}).get("Variables", {})),
        )
    rules = {}
    for rule in _pages(events, "list_rules", "Rules"):
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        pattern = rule.get("EventPattern")
        rules[rule["Name"]] = DeployedRule(
            arn=rule["Arn"],
            schedule_expression=rule.get("ScheduleExpression"),
            event_pattern=json.loads(pattern) if pattern else None,
            targets=tuple(sorted(target["Arn"] for target in targets)),
        )
    roles = {}
    for role in _pages(iam, "list_roles", "Roles"):
        name = role["RoleName"]
        inline = {
            policy: iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
            for policy in _pages(iam, "list_role_policies", "PolicyNames", RoleName=name)
        }
        attached = _pages(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name)
        roles[name] = DeployedRole(
            role_id=role["RoleId"],
            arn=role["Arn"],
            inline_policies=inline,
            attached_policies=tuple(policy["PolicyArn"] for policy in attached),
        )
    mappings = {
        mapping["UUID"]: DeployedMapping(
            function_arn=mapping["FunctionArn"],
            event_source_arn=mapping["EventSourceArn"],
            response_types=tuple(mapping.get("FunctionResponseTypes") or ()),
        )
        for mapping in _pages(lambdas, "list_event_source_mappings", "EventSourceMappings")
    }
    tables = tuple(_pages(client("dynamodb"), "list_tables", "TableNames"))
    queues = tuple(client("sqs").list_queues().get("QueueUrls", []))
    return Deployed(functions, rules, roles, mappings, tables, queues)


# --- The moto server -----------------------------------------------------------------


def list_event_source_mappings_by_name_or_arn(
    original: Callable[..., Iterable[Any]],
) -> Callable[[Any, str | None, str | None], list[Any]]:
    """moto's ListEventSourceMappings with ``FunctionName`` matched as AWS matches it.

    AWS takes a function's name or ARN, whichever CreateEventSourceMapping was given;
    moto 5.2.5 compares the two strings. Only that filter changes.
    """
    from moto.awslambda.exceptions import UnknownFunctionException

    def listed(backend: Any, event_source_arn: str | None, function_name: str | None) -> list[Any]:
        mappings = list(original(backend, event_source_arn, None))
        if not function_name:
            return mappings
        try:
            arn = backend.get_function(function_name).function_arn
        except UnknownFunctionException:
            return []
        return [mapping for mapping in mappings if mapping.function_arn == arn]

    return listed


def serve(port: int) -> None:
    """Run moto's server on 127.0.0.1:``port`` (see the module's docstring for its one patch)."""
    from moto.awslambda.models import LambdaBackend
    from moto.server import main

    LambdaBackend.list_event_source_mappings = list_event_source_mappings_by_name_or_arn(  # type: ignore[assignment]
        LambdaBackend.list_event_source_mappings
    )
    main(["--host", "127.0.0.1", "--port", str(port)])


def free_port() -> int:
    """A TCP port free on the loopback interface at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2):  # noqa: S310 - loopback
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """A moto server for the block; yields its endpoint (``http://127.0.0.1:<port>``)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - fixed command, no shell
            [sys.executable, "-m", "ops.rehearse", "serve", "--port", str(port)],
            cwd=PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(endpoint):
            try:
                process.wait(timeout=0.1)  # the pause between polls
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                raise RehearsalError(f"moto server did not answer:\n{log.read_text()}") from None
            raise RehearsalError(f"moto server exited:\n{log.read_text()}")
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- The rehearsal -------------------------------------------------------------------


def copy_project(destination: Path) -> Path:
    """A copy of the project without environments, caches, outputs or deployed state."""
    shutil.copytree(PROJECT_DIR, destination, ignore=NOT_COPIED, symlinks=True)
    return destination


def environment(endpoint: str, home: Path) -> dict[str, str]:
    """This process's environment with every AWS setting replaced: fake credentials, no
    profile or config file, every service at ``endpoint``. The region is left to the
    Makefile's default (the stage's, from ops/stages.py)."""
    # MAKEFLAGS and the like belong to the make running the rehearsal, not to the copy's.
    drop = ("AWS_", "POWERTOOLS_", "MAKE", "MFLAGS")
    env = {name: value for name, value in os.environ.items() if not name.startswith(drop)}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_ENDPOINT_URL": endpoint,
        }
    )
    return env


@dataclass
class Rehearsal:
    """The snapshots after each step and what each step printed."""

    endpoint: str
    first: Deployed
    second: Deployed
    deleted: Deployed
    output: dict[str, str]
    seconds: float


def _run(step: str, command: list[str], cwd: Path, env: Mapping[str, str]) -> str:
    result = subprocess.run(  # noqa: S603 - fixed commands, no shell
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RehearsalError(f"{step} exited {result.returncode}:\n{output}")
    return output


def rehearse(work_dir: Path, stage: str = STAGE) -> Rehearsal:
    """Deploy ``stage`` twice with ``make deploy`` and delete it, on a fresh moto server."""
    started = time.monotonic()
    project = copy_project(work_dir / "project")
    venv = Path(sys.prefix)
    # The environment exists already: `-o install` keeps make from reinstalling it.
    deploy = [
        "make",
        "--no-print-directory",
        "-o",
        "install",
        "deploy",
        f"STAGE={stage}",
        f"VENV={venv}",
    ]
    delete = [str(venv / "bin" / "chalice"), "delete", "--stage", stage]
    output = {}
    with moto_server(work_dir / "moto-server.log") as endpoint:
        env = environment(endpoint, work_dir)
        output["deploy"] = _run("make deploy", deploy, project, env)
        first = snapshot(endpoint)
        output["redeploy"] = _run("make deploy (again)", deploy, project, env)
        second = snapshot(endpoint)
        # No make target deletes a stage; the Makefile gives `make deploy` its region.
        output["delete"] = _run(
            "chalice delete", delete, project, env | {"AWS_DEFAULT_REGION": REGION}
        )
        deleted = snapshot(endpoint)
    return Rehearsal(endpoint, first, second, deleted, output, time.monotonic() - started)


def main(argv: list[str] | None = None) -> None:
    """``python -m ops.rehearse serve --port N``: the rehearsal's moto server."""
    parser = argparse.ArgumentParser(prog="python -m ops.rehearse")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="moto's server, as the rehearsal runs it").add_argument(
        "--port", type=int, required=True
    )
    arguments = parser.parse_args(argv)
    serve(arguments.port)


if __name__ == "__main__":
    main()
