"""The slimmed bundle: botocore's data for the services the functions call, nothing else."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import botocore.loaders
import botocore.model
import pytest

from ops.slim import ENDPOINTS, SERVICES, SlimError, main, slim, without_documentation
from ops.stages import stage_environment

ROOT = Path(__file__).resolve().parents[2]
# Each service of the fake bundle and its endpoint prefix (SESv2's endpoints are "email").
PREFIXES = {"dynamodb": "dynamodb", "sesv2": "email", "sqs": "sqs", "sts": "sts", "s3": "s3"}


def _bundle(path: Path, services: dict[str, str]) -> Path:
    """A zip like chalice's: app.py, and botocore's data for ``services`` in two partitions."""
    endpoints = {
        "version": 3,
        "partitions": [
            {
                "partition": partition,
                "regions": {"ap-southeast-2": {}},
                "services": {prefix: {"endpoints": {}} for prefix in services.values()},
            }
            for partition in ("aws", "aws-cn")
        ],
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("app.py", "")
        archive.writestr("botocore/__init__.py", "")
        archive.writestr(ENDPOINTS, json.dumps(endpoints))
        for service, prefix in services.items():
            model = {"metadata": {"endpointPrefix": prefix}}
            folder = f"botocore/data/{service}/2020-01-01"
            archive.writestr(
                f"{folder}/service-2.json.gz", gzip.compress(json.dumps(model).encode())
            )
            archive.writestr(f"{folder}/paginators-1.json", "{}")
    return path


def test_it_keeps_only_the_called_services_models_and_endpoints(tmp_path: Path) -> None:
    # Given a bundle with botocore's data for the called services and for S3
    bundle = _bundle(tmp_path / "deployment.zip", PREFIXES)

    # When it is slimmed
    done = slim(bundle)

    # Then S3's model is gone, the others and the code stay ...
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        endpoints = json.loads(archive.read(ENDPOINTS))
    models = {n.split("/")[2] for n in names if n.startswith("botocore/data/") and n != ENDPOINTS}
    assert models == {"dynamodb", "sesv2", "sqs", "sts"}
    assert {"app.py", "botocore/__init__.py"} <= names
    # ... and every partition keeps its regions and lists only those services' endpoints
    assert [p["partition"] for p in endpoints["partitions"]] == ["aws", "aws-cn"]
    for partition in endpoints["partitions"]:
        assert partition["regions"] == {"ap-southeast-2": {}}
        assert set(partition["services"]) == {"dynamodb", "email", "sqs", "sts"}
    assert done.services_dropped == 1


def test_it_refuses_a_bundle_without_a_service_it_must_keep(tmp_path: Path) -> None:
    # Given a bundle whose botocore has no SESv2 model
    bundle = _bundle(
        tmp_path / "deployment.zip", {"dynamodb": "dynamodb", "sqs": "sqs", "sts": "sts"}
    )

    # Then slimming refuses, naming it, and leaves the zip as it was
    before = bundle.read_bytes()
    with pytest.raises(SlimError, match="missing sesv2"):
        slim(bundle)
    assert bundle.read_bytes() == before


def test_the_functions_make_clients_only_for_the_services_kept() -> None:
    # Given the services of every botocore client made, recorded as they are made
    code = """
import json, botocore.session
made = []
create = botocore.session.Session.create_client
def recorded(self, service_name, *args, **kwargs):
    made.append(service_name)
    return create(self, service_name, *args, **kwargs)
botocore.session.Session.create_client = recorded

# When the app is imported (its init phase, with a fan-out queue) and an SES event's
# handler makes its client
import app
from chalicelib import mailer, models
mailer.ses_client("ap-southeast-2")
models.Notification._get_connection().connection.client
print(json.dumps(sorted(set(made))))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    env.update(stage_environment("dev"))
    # The packaged template gives the scheduled functions their queue's URL.
    env["FANOUT_QUEUE_URL"] = "https://sqs.ap-southeast-2.amazonaws.com/123456789012/q"
    env.update(AWS_REGION="ap-southeast-2", AWS_ACCESS_KEY_ID="t", AWS_SECRET_ACCESS_KEY="t")
    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )

    # Then each is a service whose data the slimmed bundle keeps
    made = json.loads(result.stdout.splitlines()[-1])
    assert made == ["dynamodb", "sesv2", "sqs"]
    assert set(made) <= SERVICES


def test_the_slim_command_reports_what_it_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a package whose botocore has S3's data too, and one without SESv2's
    _bundle(tmp_path / "deployment.zip", PREFIXES)
    broken = tmp_path / "broken"
    broken.mkdir()
    _bundle(broken / "deployment.zip", {"dynamodb": "dynamodb", "sqs": "sqs", "sts": "sts"})

    # Then the first is slimmed (one service dropped) and the second refused
    assert main([str(tmp_path)]) == 0
    assert "1 services dropped" in capsys.readouterr().out
    assert main([str(broken)]) == 1
    assert "missing sesv2" in capsys.readouterr().err


def test_it_drops_the_models_documentation_and_keeps_what_clients_read(tmp_path: Path) -> None:
    # Given a bundle whose DynamoDB model documents itself, an operation, a shape, and
    # a client context parameter (whose documentation botocore reads)
    others = {service: prefix for service, prefix in PREFIXES.items() if service != "dynamodb"}
    bundle = _bundle(tmp_path / "deployment.zip", others)
    model = {
        "metadata": {"endpointPrefix": "dynamodb"},
        "documentation": "<p>Amazon DynamoDB</p>",
        "operations": {"Query": {"name": "Query", "documentation": "<p>Finds items</p>"}},
        "shapes": {"Key": {"type": "string", "documentation": "<p>A key</p>"}},
        "clientContextParams": {"Accelerate": {"type": "boolean", "documentation": "Kept"}},
    }
    folder = "botocore/data/dynamodb/2020-01-01"
    with zipfile.ZipFile(bundle, "a") as archive:
        archive.writestr(f"{folder}/service-2.json.gz", gzip.compress(json.dumps(model).encode()))

    # When it is slimmed
    slim(bundle)

    # Then the model is plain JSON (botocore's loader tries .json first) without the
    # documentation of the service, its operations and shapes, and keeps the rest
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        slimmed = json.loads(archive.read(f"{folder}/service-2.json"))
    assert f"{folder}/service-2.json.gz" not in names
    assert slimmed == {
        "metadata": {"endpointPrefix": "dynamodb"},
        "operations": {"Query": {"name": "Query"}},
        "shapes": {"Key": {"type": "string"}},
        "clientContextParams": {"Accelerate": {"type": "boolean", "documentation": "Kept"}},
    }


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_real_model_without_documentation_still_describes_every_operation(service: str) -> None:
    # Given botocore's own model of a kept service, and the same without documentation
    loader = botocore.loaders.create_loader()
    model = loader.load_service_model(service, "service-2")
    stripped = botocore.model.ServiceModel(without_documentation(model), service)
    original = botocore.model.ServiceModel(model, service)

    # Then every operation's input and output shapes are the same, member for member
    assert stripped.operation_names == original.operation_names
    for name in original.operation_names:
        for shape in ("input_shape", "output_shape"):
            before = getattr(original.operation_model(name), shape)
            after = getattr(stripped.operation_model(name), shape)
            assert (after and list(after.members)) == (before and list(before.members))
    assert [p.name for p in stripped.client_context_parameters] == [
        p.name for p in original.client_context_parameters
    ]


def test_it_ships_the_kept_services_endpoint_rules_as_plain_json(tmp_path: Path) -> None:
    # Given a bundle with DynamoDB's endpoint rules gzipped, as botocore ships them
    bundle = _bundle(tmp_path / "deployment.zip", PREFIXES)
    rules = {"version": "1.0", "parameters": {"Region": {"type": "String"}}, "rules": []}
    folder = "botocore/data/dynamodb/2020-01-01"
    with zipfile.ZipFile(bundle, "a") as archive:
        archive.writestr(
            f"{folder}/endpoint-rule-set-1.json.gz", gzip.compress(json.dumps(rules).encode())
        )
        archive.writestr(
            "botocore/data/s3/2020-01-01/endpoint-rule-set-1.json.gz", gzip.compress(b"{}")
        )

    # When it is slimmed
    slim(bundle)

    # Then the kept service's rules are the same data, plain (what botocore tries first),
    # and the dropped service's are gone
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert json.loads(archive.read(f"{folder}/endpoint-rule-set-1.json")) == rules
    assert f"{folder}/endpoint-rule-set-1.json.gz" not in names
    assert not any(name.startswith("botocore/data/s3/") for name in names)
