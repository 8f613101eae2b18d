"""moto's DynamoDB answers, their items encoded with ``json.dumps`` (a pytest plugin; tests only).

moto 5.2.5 encodes every answer with its generic response serializer, which walks the
operation's output shape and, for each attribute of each item, every member of
DynamoDB's ``AttributeValue`` union: about 5 ms an item, a seventh of the whole suite's
time. An item in the result a DynamoDB operation hands the serializer (a
``DynamoResult``) is already in DynamoDB's wire format: strings, booleans, lists and
maps, and raw bytes for ``B`` and ``BS``. :func:`encode` lets moto's serializer encode
the rest of the answer (counts, capacity, descriptions: it makes 1 a float where the
shape says Double) and writes the items with ``json.dumps``, bytes in base64.

``tests/unit/test_moto_dynamodb_json.py`` proves that botocore parses the two
encodings of every kind of answer the project's code and tests receive to the same
values, of the same types. Only the encoding of a successful DynamoDB answer changes:
what moto stores, checks and refuses (errors are raised, never a ``DynamoResult``) is
moto's own, and DynamoDB Local runs the same tests unchanged (``make test-ddblocal``).
"""

from __future__ import annotations

import base64
import json

from moto.core.common_types import TYPE_RESPONSE
from moto.core.responses import ActionContext, ActionResult
from moto.dynamodb.responses import DynamoResult

# What moto's JSON serializer sends with every DynamoDB answer (DynamoDB's JSON 1.0).
CONTENT_TYPE = "application/x-amz-json-1.0"

_MOTO_ENCODING = DynamoResult.execute_result


# The members of DynamoDB's answers that hold only attribute values (items and keys).
ITEM_MEMBERS = frozenset({"Item", "Items", "Attributes", "LastEvaluatedKey", "Responses"})


def _bytes(value: object) -> str:
    """Raw bytes (``B``, ``BS``) as the wire has them: base64."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not an attribute value")


def encode(result: ActionResult, context: ActionContext) -> TYPE_RESPONSE:
    """A successful DynamoDB answer as moto's serializer sends it, items without its walk."""
    answer = result.result
    if not isinstance(answer, dict):
        return _MOTO_ENCODING(result, context)
    items = {k: v for k, v in answer.items() if k in ITEM_MEMBERS}
    if not items:
        return _MOTO_ENCODING(result, context)
    rest = ActionResult({k: v for k, v in answer.items() if k not in ITEM_MEMBERS})
    status, headers, body = _MOTO_ENCODING(rest, context)
    encoded = {**json.loads(body), **items}
    return status, headers, json.dumps(encoded, default=_bytes)


def moto_encode(result: DynamoResult, context: ActionContext) -> TYPE_RESPONSE:
    """The answer as moto's own serializer encodes it."""
    return _MOTO_ENCODING(result, context)


DynamoResult.execute_result = encode  # type: ignore[method-assign, assignment]
