"""`make deploy` rehearsed on a local moto server (``make deploy-rehearsal``; ops/rehearse.py).

One rehearsal per module: ``make deploy STAGE=dev``, the same again, then ``chalice delete``,
in a temporary copy of the project; each test checks one of its outcomes. The expected
functions and rules come from the Chalice app's registrations and ``.chalice/config.json``.
Not part of ``make test`` (``norecursedirs`` in pyproject.toml): it takes 40-80 s.
"""

from __future__ import annotations

import json

import pytest

import app
from chalicelib import fanout, registry
from chalicelib.runner import SCHEDULED_PREFIX
from ops import rehearse
from ops.stages import PROJECT_DIR, stage_environment

pytestmark = pytest.mark.deploy_rehearsal

PREFIX = "loan-reminders-dev-"
CONSUMER = f"{PREFIX}deliver_fanout"


def _chalice_dir() -> dict[str, float]:
    return {path.name: path.stat().st_mtime for path in (PROJECT_DIR / ".chalice").iterdir()}


@pytest.fixture(scope="module")
def before() -> dict[str, float]:
    """The project's ``.chalice/`` before the rehearsal: names and modification times."""
    return _chalice_dir()


@pytest.fixture(scope="module")
def rehearsal(
    before: dict[str, float], tmp_path_factory: pytest.TempPathFactory
) -> rehearse.Rehearsal:
    """Deploy twice and delete, once for the module."""
    return rehearse.rehearse(tmp_path_factory.mktemp("rehearsal"))


def test_make_deploy_creates_every_registered_function_with_its_handler_memory_and_timeout(
    rehearsal: rehearse.Rehearsal,
) -> None:
    # Given the functions the Chalice app registers, configured by .chalice/config.json
    expected = rehearse.expected_functions(app.app)

    # When make deploy has run, then each exists, and nothing else does
    deployed = rehearsal.first.functions
    assert {name: (f.handler, f.memory, f.timeout) for name, f in deployed.items()} == {
        name: (f.handler, f.memory, f.timeout) for name, f in expected.items()
    }
    assert f"{PREFIX}{SCHEDULED_PREFIX}{registry.NOTE_REMINDERS}" in deployed
    assert {f"{PREFIX}run_check", CONSUMER, f"{PREFIX}record_ses_events"} <= deployed.keys()


def test_the_rules_carry_exactly_the_registered_schedules_and_pattern_and_target_their_functions(
    rehearsal: rehearse.Rehearsal,
) -> None:
    # Given the app's schedules and its SES event pattern
    expected = rehearse.expected_rules(app.app)
    functions = rehearsal.first.functions

    # When make deploy has run, then every rule targets one function, with its expression
    rules = rehearsal.first.rules.values()
    assert all(len(rule.targets) == 1 for rule in rules)
    assert {rule.targets[0]: (rule.schedule_expression, rule.event_pattern) for rule in rules} == {
        functions[name].arn: (rule.schedule_expression, rule.event_pattern)
        for name, rule in expected.items()
    }
    schedules = [rule for rule in expected.values() if rule.schedule_expression]
    assert len(schedules) == len(registry.NAMES)


def test_each_functions_role_carries_exactly_its_stage_policy_file(
    rehearsal: rehearse.Rehearsal,
) -> None:
    # Given the stage's policy files; the fan-out consumer has its own
    expected = rehearse.expected_functions(app.app)
    chalice_dir = PROJECT_DIR / ".chalice"
    stage_policy = json.loads((chalice_dir / "policy-dev.json").read_text())
    consumer_policy = json.loads((chalice_dir / "policy-dev-fanout.json").read_text())
    assert {name: f.policy == stage_policy for name, f in expected.items()} == {
        name: name != CONSUMER for name in expected
    }
    assert expected[CONSUMER].policy == consumer_policy

    # When make deploy has run, then each function's role carries its file and nothing else
    deployed = rehearsal.first
    roles = {name: f.role.rpartition("/")[2] for name, f in deployed.functions.items()}
    assert set(deployed.roles) == set(roles.values())
    for name, role in roles.items():
        assert list(deployed.roles[role].inline_policies.values()) == [expected[name].policy]
        assert deployed.roles[role].attached_policies == ()


def test_make_deploy_provisions_the_stage_and_turns_its_fan_out_on(
    rehearsal: rehearse.Rehearsal,
) -> None:
    # Given the dev stage's tables and variables
    environment = stage_environment("dev")
    tables = {value for key, value in environment.items() if key.endswith("_TABLE")}

    # When make deploy has run, then its tables and fan-out queues exist ...
    deployed = rehearsal.first
    assert set(deployed.tables) == tables
    (queue_url,) = [url for url in deployed.queues if url.endswith(f"/{PREFIX}fanout")]
    assert any(url.endswith(f"/{PREFIX}fanout-dead-letters") for url in deployed.queues)
    # ... the consumer reads the queue with partial batch responses ...
    (mapping,) = deployed.mappings.values()
    assert mapping.function_arn == deployed.functions[CONSUMER].arn
    assert mapping.event_source_arn.endswith(f":{PREFIX}fanout")
    assert mapping.response_types == ("ReportBatchItemFailures",)
    # ... and every function has the stage's variables, plus what fanout-on adds
    rate = {"FANOUT_CONSUMER_RATE": f"{fanout.CONSUMER_RATE:g}"}
    url = {"FANOUT_QUEUE_URL": queue_url}
    assert {name: f.environment for name, f in deployed.functions.items()} == {
        name: environment | (rate if name == CONSUMER else url if SCHEDULED_PREFIX in name else {})
        for name in deployed.functions
    }


def test_a_second_make_deploy_updates_in_place_and_duplicates_nothing(
    rehearsal: rehearse.Rehearsal,
) -> None:
    # Given a deployed stage, when make deploy runs again
    first, second = rehearsal.first, rehearsal.second

    # Then the same functions (ARNs, versions, code, settings), rules, roles (same ids),
    # mappings, tables and queues are there, and nothing more
    assert second == first
    assert all(f.versions == ("$LATEST",) for f in second.functions.values())
    # ... Chalice updated what it had made, and provision found everything there
    assert "Creating IAM role" not in rehearsal.output["redeploy"]
    assert "Creating lambda function" not in rehearsal.output["redeploy"]
    assert "Updating lambda function" in rehearsal.output["redeploy"]
    assert ": created" not in rehearsal.output["redeploy"]
    assert ": created" in rehearsal.output["deploy"]


def test_chalice_delete_removes_every_function_rule_role_and_event_source(
    rehearsal: rehearse.Rehearsal,
) -> None:
    # Given a deployed stage, when chalice delete has run
    deleted = rehearsal.deleted

    # Then nothing Chalice made is left; provision's tables and queues are kept (Retain)
    assert rehearsal.first.functions
    assert (deleted.functions, deleted.rules, deleted.roles, deleted.mappings) == ({}, {}, {}, {})
    assert (deleted.tables, deleted.queues) == (rehearsal.first.tables, rehearsal.first.queues)


def test_the_rehearsal_leaves_the_projects_chalice_directory_untouched(
    rehearsal: rehearse.Rehearsal, before: dict[str, float]
) -> None:
    # Given the project's .chalice/ before the rehearsal, when it has run (in a copy)
    assert rehearsal.first.functions

    # Then no deployed state was written there, and nothing in it changed
    assert _chalice_dir() == before
