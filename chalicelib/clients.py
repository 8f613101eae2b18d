"""The container's AWS session: every client is made from it once and then reused.

A Lambda container makes its clients in the init phase (``runner.prepare``, run when
app.py is imported) so that its first invocation costs what a warm one does. Botocore
alone suffices: boto3 (and the s3transfer it pulls in) is never imported.
"""

from __future__ import annotations

import codecs
import functools
import gzip
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, cast

import botocore.loaders
import botocore.session
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.client import BaseClient
from botocore.compat import HTTPHeaders

# What botocore's own loader tries for a data file, in its order.
_DATA_FILES = ((".json", open), (".json.gz", gzip.open))
# The unique id of the handler that answers a priming request (see prime()).
_PRIMING = "chalicelib.clients.prime"


class PlainJSONFileLoader(botocore.loaders.JSONFileLoader):
    """botocore's data files (models, endpoints, rules) parsed into plain dicts.

    botocore parses each file with an ``OrderedDict`` per JSON object; a dict keeps
    its keys in order too, and nothing botocore does with the data tells them apart,
    so the same data loads in half the time (about 4 ms of the clients' 25 ms). The
    files are found as botocore finds them: ``.json``, else ``.json.gz``.
    """

    def load_file(self, file_path: str) -> Any:
        """The data in ``file_path.json`` or else ``file_path.json.gz``; None if neither is."""
        for ext, open_method in _DATA_FILES:
            if os.path.isfile(file_path + ext):
                with open_method(file_path + ext, "rb") as data:
                    return json.loads(data.read().decode("utf-8"))
        return None


@functools.cache
def session() -> botocore.session.Session:
    """The one botocore session of this process (SES's client and PynamoDB's come from it)."""
    made = botocore.session.get_session()
    loader = botocore.loaders.create_loader(made.get_config_variable("data_path"))
    loader.file_loader = PlainJSONFileLoader()
    made.register_component("data_loader", loader)
    return made


def prime(
    client: BaseClient, operation: str, params: Mapping[str, Any], answer: Mapping[str, Any]
) -> None:
    """Take ``operation``'s one-time costs in the init phase, sending nothing.

    botocore does part of a request's work on a client's first request of each
    operation (the operation's shapes, the endpoint rules, the credentials the signer
    freezes) and urllib3 imports the IDNA codec on its first connection: about 3 ms
    that the first invocation paid over a warm one. This makes the request through
    ``client``'s whole pipeline (parameters, serializing, endpoint, signing, parsing)
    and answers it in-process with a 200 carrying ``answer`` from a ``before-send``
    handler, registered first for this one request and removed after: botocore sends
    nothing on the network when a handler answers. botocore resolves the shapes of the
    members it serializes and parses only, so ``params`` and ``answer`` should have
    the members real requests and answers have.
    """
    codecs.lookup("idna")
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"
    body = json.dumps(answer).encode()

    def respond(request: AWSRequest, **_: Any) -> AWSResponse:
        return AWSResponse(request.url or "", 200, HTTPHeaders(), _Body(body))

    # botocore-stubs type handlers as returning None; a before-send handler may answer.
    handler = cast("Callable[..., None]", respond)
    client.meta.events.register_first(event, handler, unique_id=_PRIMING)
    try:
        getattr(client, botocore.xform_name(operation))(**params)
    finally:
        client.meta.events.unregister(event, unique_id=_PRIMING)


class _Body:
    """The raw body of an in-process answer."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Any:
        """The body's chunks, as urllib3's responses give them."""
        yield self._data
