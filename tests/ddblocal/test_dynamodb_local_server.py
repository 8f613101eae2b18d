"""The DynamoDB Local process: loopback only, answering when started, gone when stopped.

Collected only with ``--dynamodb=local`` (see ``conftest.py`` here).
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import EndpointConnectionError

from ops import ddblocal


def _port(endpoint: str) -> int:
    port = urlsplit(endpoint).port
    assert port is not None
    return port


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def test_the_session_server_listens_on_127_0_0_1_only(dynamodb_endpoint: str) -> None:
    port = _port(dynamodb_endpoint)

    assert _accepts("127.0.0.1", port)
    # Linux routes all of 127/8 to the loopback interface: a server bound to every
    # interface (DynamoDB Local's default) would accept this connection too.
    assert not _accepts("127.0.0.2", port)


def test_a_started_server_answers_and_a_stopped_one_is_gone(tmp_path: Path) -> None:
    with ddblocal.running(tmp_path) as server:
        client = ddblocal.client(server.endpoint)
        assert client.list_tables()["TableNames"] == []
        assert f"DynamoDB Local listening on {server.endpoint}" in server.output()
        assert "InMemory:\ttrue" in server.output()
        assert "SharedDb:\ttrue" in server.output()

    assert server.process.returncode is not None
    with pytest.raises(EndpointConnectionError):
        client.list_tables()
    client.close()
