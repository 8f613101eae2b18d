"""What a cold start loads and makes: its own check, no boto3, one session's clients.

Each test imports in a fresh interpreter, as Lambda does, and reads what it left in
``sys.modules`` and the clients it made. How long any of it takes is measured by
``python -m ops.coldstart``, never here.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chalice.app import ScheduledEventConfig

import app
from chalicelib import registry
from chalicelib.runner import scheduled_check
from ops.stages import stage_environment

ROOT = Path(__file__).resolve().parents[2]
# What a deployed function's environment holds (fake credentials: nothing is called).
FUNCTION_ENV = {
    **stage_environment("dev"),
    "AWS_REGION": "ap-southeast-2",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}
CHECK_MODULES = {f"chalicelib.checks.{name}" for name in registry.NAMES}


def _fresh(code: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a new interpreter at the project root; the JSON it prints last."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    clean.pop("DYNAMODB_ENDPOINT_URL", None)
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_app_loads_no_check_and_no_boto3() -> None:
    # When the handlers' module is imported in a deployed function's environment
    loaded = _fresh("import json, sys, app; print(json.dumps(sorted(sys.modules)))", FUNCTION_ENV)

    # Then no check module, no boto3 and no s3transfer is loaded
    assert CHECK_MODULES.isdisjoint(loaded)
    assert {name.split(".")[0] for name in loaded}.isdisjoint({"boto3", "s3transfer"})
    assert "botocore.client" in loaded


@pytest.mark.parametrize("check", registry.NAMES)
def test_a_scheduled_run_loads_its_own_check_only(check: str) -> None:
    # Given the app imported, when its function first asks the registry for its check
    code = (
        "import json, sys, app; from chalicelib import registry; "
        f"print(json.dumps([registry.check({check!r}).name, sorted(sys.modules)]))"
    )
    name, loaded = _fresh(code, FUNCTION_ENV)

    # Then that check's module is loaded and no other check's
    assert name == check
    assert CHECK_MODULES & set(loaded) == {f"chalicelib.checks.{check}"}
    assert {module.split(".")[0] for module in loaded}.isdisjoint({"boto3", "s3transfer"})


@pytest.mark.parametrize("check", registry.NAMES)
def test_a_scheduled_function_imports_its_own_check_in_the_init_phase(check: str) -> None:
    # When Lambda imports the app for the scheduled function of one check (_HANDLER)
    loaded = _init_phase(f"app.check_{check}")["modules"]

    # Then that check's module is loaded before any invocation, and no other check's
    assert CHECK_MODULES & set(loaded) == {f"chalicelib.checks.{check}"}


def test_each_schedule_names_the_check_its_handler_runs() -> None:
    # Given the schedules app.py registers, and its other handlers
    schedules = {
        s.name: s.handler_string
        for s in app.app.event_sources
        if isinstance(s, ScheduledEventConfig)
    }
    others = ["app.run_check", "app.on_ses_event", "check_note_reminders", "app.check_nothing", ""]

    # Then each schedule's handler leads the init phase to the check it runs, and no other
    # handler (nor a malformed one) leads it to any
    assert {name: scheduled_check(handler) for name, handler in schedules.items()} == {
        f"check_{name}": name for name in registry.NAMES
    }
    assert [scheduled_check(handler) for handler in others] == [None] * len(others)


def test_the_init_phase_makes_every_client_from_one_session() -> None:
    # Given botocore sessions counted as they are made
    code = """
import json, botocore.session
made = []
start = botocore.session.Session.__init__
def counted(self, *args, **kwargs):
    made.append(self)
    start(self, *args, **kwargs)
botocore.session.Session.__init__ = counted

# When the handlers' module is imported (Lambda's init phase)
import app
from chalicelib import mailer, models
ses = mailer._default_clients.get("ap-southeast-2")
dynamodb = {id(m._get_connection().connection._client) for m in models.ALL_MODELS}
ledger = models.Notification._get_connection().connection._client
print(json.dumps({
    "sessions": len(made),
    "ses": ses is not None and ses.meta.service_model.service_name,
    "dynamodb_clients": len(dynamodb),
    "shared_loader": ses._loader is ledger._loader,
}))
"""
    made = _fresh(code, FUNCTION_ENV)

    # Then one session made SES's client and the one DynamoDB client every model sends through
    assert made == {"sessions": 1, "ses": "sesv2", "dynamodb_clients": 1, "shared_loader": True}


def test_without_the_functions_settings_importing_makes_no_client() -> None:
    # When Chalice's CLI imports the app to package it (no stage environment)
    code = (
        "import json, app; from chalicelib import mailer, models; "
        "print(json.dumps([len(mailer._default_clients), "
        "[m._connection is None for m in models.ALL_MODELS]]))"
    )
    ses_clients, unbound = _fresh(code)

    # Then the import succeeds and every client is left for its first use
    assert ses_clients == 0
    assert all(unbound)


def test_the_registry_names_each_check_from_its_module_and_nothing_else() -> None:
    # Then each check is named after its registry entry, in the registry's order ...
    assert [registry.check(name).name for name in registry.NAMES] == list(registry.CHECKS)
    assert registry.declared_in("chalicelib.checks.note_reminders") == "note_reminders"
    # ... and a module that is no check's, or a name the registry lacks, is refused
    with pytest.raises(LookupError, match=r"chalicelib\.mailer declares no check"):
        registry.declared_in("chalicelib.mailer")
    with pytest.raises(AttributeError, match="no attribute 'CHECK_NAMES'"):
        registry.CHECK_NAMES  # noqa: B018


# Records, in a fresh interpreter, every request botocore gets ready to send while the
# app is imported, every connection anything opens, and the modules it left loaded.
_RECORD_INIT_PHASE = """
import json, socket, sys
from botocore.handlers import BUILTIN_HANDLERS
requests, connections = [], []
def record(request, **kwargs):
    requests.append(request.headers["X-Amz-Target"].decode().split(".")[-1])
BUILTIN_HANDLERS.append(("before-send.dynamodb", record))
def refuse(self, address):
    connections.append(str(address))
    raise OSError("no network in the init phase")
socket.socket.connect = refuse
import app
print(json.dumps({"requests": requests, "connections": connections,
                  "idna": "encodings.idna" in sys.modules, "modules": sorted(sys.modules)}))
"""


# A fresh interpreter costs most of a second: the init phase of each function is recorded
# once and read by every test about it.
@functools.cache
def _init_phase(handler: str) -> dict[str, Any]:
    """What Lambda's import of the app for ``handler`` (its ``_HANDLER``) sent, opened, loaded."""
    made: dict[str, Any] = _fresh(_RECORD_INIT_PHASE, {**FUNCTION_ENV, "_HANDLER": handler})
    return made


@pytest.mark.parametrize("check", registry.NAMES)
def test_a_scheduled_function_primes_its_reads_in_the_init_phase_without_sending(
    check: str,
) -> None:
    # When Lambda imports the app for a scheduled function, no network reachable
    made = _init_phase(f"app.check_{check}")

    # Then the Query and the BatchGetItem every run opens with went through the client, and
    # the IDNA codec a first connection loads is loaded, with no connection opened
    assert (made["requests"], made["connections"], made["idna"]) == (
        ["Query", "BatchGetItem"],
        [],
        True,
    )


def test_other_functions_prime_nothing() -> None:
    # When Lambda imports the app for a function that is no scheduled check's
    made = _init_phase("app.record_ses_events")

    # Then no request went through any client
    assert made["requests"] == []
    assert made["connections"] == []
