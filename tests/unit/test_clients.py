"""The container's session: botocore's data loaded as plain dicts, requests primed in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import botocore.loaders
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest

from chalicelib import clients
from ops.slim import SERVICES

DATA = Path(botocore.loaders.__file__).parent / "data"
# What the clients load: the shared files, then each kept service's model and endpoint rules.
LOADED = ["endpoints", "partitions", "sdk-default-configuration", "_retry"] + [
    str(version / name).removeprefix(f"{DATA}/")
    for service in sorted(SERVICES)
    for version in sorted((DATA / service).iterdir())
    for name in ("service-2", "endpoint-rule-set-1", "paginators-1")
    if (version / f"{name}.json").exists() or (version / f"{name}.json.gz").exists()
]


def _ordered(data: Any) -> str:
    # JSON text keeps every object's key order: equal texts, equal data in the same order.
    return json.dumps(data)


@pytest.mark.parametrize("name", LOADED)
def test_the_plain_loader_reads_what_botocores_reads_in_the_same_order(name: str) -> None:
    # When a data file is read by botocore's loader and by the plain one
    theirs = botocore.loaders.JSONFileLoader().load_file(str(DATA / name))
    ours = clients.PlainJSONFileLoader().load_file(str(DATA / name))

    # Then both read the same data, keys in the same order
    assert ours is not None
    assert _ordered(ours) == _ordered(theirs)


def test_the_plain_loader_finds_what_botocores_finds(tmp_path: Path) -> None:
    # Given a plain file, a gzipped one, and a name with neither
    (tmp_path / "plain.json").write_text('{"b": 1, "a": [2]}')
    botocore_gz = DATA / "dynamodb" / "2012-08-10" / "endpoint-rule-set-1"
    loader = clients.PlainJSONFileLoader()

    # Then it finds and reads each as botocore's loader does
    assert loader.exists(str(tmp_path / "plain"))
    assert loader.exists(str(botocore_gz))
    assert loader.load_file(str(tmp_path / "plain")) == {"b": 1, "a": [2]}
    assert not loader.exists(str(tmp_path / "missing"))
    assert loader.load_file(str(tmp_path / "missing")) is None


def test_the_session_loads_its_data_with_the_plain_loader() -> None:
    # When the container's session makes a client
    client: Any = clients.session().create_client("sts", region_name="ap-southeast-2")

    # Then its model came through the plain loader, as plain dicts
    assert isinstance(client._loader.file_loader, clients.PlainJSONFileLoader)
    assert type(client._loader.load_service_model("sts", "service-2")) is dict


def test_a_primed_request_is_answered_in_process_and_leaves_no_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a client whose every send would fail, and a record of what it gets ready to send
    session = botocore.session.get_session()
    client: Any = session.create_client(
        "dynamodb",
        region_name="ap-southeast-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sent: list[str] = []

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("priming must not send")

    def record(request: AWSRequest, **kwargs: object) -> None:
        target: Any = request.headers["X-Amz-Target"]
        sent.append(target.decode())

    monkeypatch.setattr(client._endpoint, "_send", refuse)
    client.meta.events.register("before-send.dynamodb.Query", record)

    answers: list[dict[str, Any]] = []
    client.meta.events.register(
        "after-call.dynamodb.Query", lambda parsed, **_: answers.append(parsed)
    )

    # When a Query is primed
    clients.prime(
        client, "Query", {"TableName": "t", "KeyConditionExpression": "id = :i"}, {"Count": 0}
    )

    # Then it went through the whole pipeline (signed, ready to send), was answered here and
    # the answer parsed
    assert sent == ["DynamoDB_20120810.Query"]
    assert [{k: v for k, v in a.items() if k != "ResponseMetadata"} for a in answers] == [
        {"Count": 0}
    ]
    # ... and the next Query is sent for real again (here: refused)
    with pytest.raises(AssertionError, match="priming must not send"):
        client.query(TableName="t", KeyConditionExpression="id = :i")
