"""Keep only the AWS services the functions call in the bundle: ``python -m ops.slim PACKAGE_DIR``.

botocore (which PynamoDB pulls in) ships the models of 400-odd services, 28 MB unzipped,
and every client it makes first lists them all and parses the endpoints of them all
(``endpoints.json``, 1.2 MB). The functions call :data:`SERVICES` only; this rewrites
``PACKAGE_DIR/deployment.zip`` without the other services' models and with an
``endpoints.json`` that lists only theirs (every partition and region kept), so the
init phase that makes the clients reads what it uses. Run it before ``ops.bytecode``.

The kept services' models lose their documentation too (``service-2.json.gz`` becomes a
plain ``service-2.json``, which botocore's loader tries first): only docstrings read it,
it is four fifths of each model, and every cold start parses each model with an
``OrderedDict`` per JSON object, so it was most of the time the clients take to make.
Their endpoint rules (``endpoint-rule-set-1.json.gz``) are shipped as plain JSON as well,
so no cold start decompresses them (the zip compresses them anyway).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLE = "deployment.zip"
DATA = "botocore/data/"
ENDPOINTS = f"{DATA}endpoints.json"
# The services the shipped code makes clients for: PynamoDB's DynamoDB, the mailer's and
# the SES events' SESv2, the fan-out's SQS, and STS for botocore's own credential providers.
SERVICES = frozenset({"dynamodb", "sesv2", "sqs", "sts"})
MODEL = "/service-2.json.gz"
# A service's endpoint rules, read by every client it makes: shipped as plain JSON too.
RULES = "/endpoint-rule-set-1.json.gz"
# The parts of a model whose "documentation" only docstrings read. The metadata's
# clientContextParams keep theirs: botocore reads that key when it makes a client.
DOCUMENTED = ("operations", "shapes")


class SlimError(RuntimeError):
    """The bundle does not hold what slimming expects (the message says what)."""


@dataclass(frozen=True)
class Slimmed:
    """What :func:`slim` did to one deployment zip."""

    services_kept: int
    services_dropped: int
    size_before: int
    size_after: int


def _service_of(name: str) -> str | None:
    """The service a ``botocore/data/<service>/...`` entry belongs to, else None."""
    if not name.startswith(DATA):
        return None
    service, slash, _ = name.removeprefix(DATA).partition("/")
    return service if slash else None


def endpoint_prefixes(bundle: zipfile.ZipFile, services: frozenset[str]) -> set[str]:
    """The endpoint prefixes (``sesv2`` is ``email``) of ``services``, from their models."""
    prefixes = set()
    for name in bundle.namelist():
        if _service_of(name) in services and name.endswith(MODEL):
            model = json.loads(gzip.decompress(bundle.read(name)))
            prefixes.add(str(model["metadata"]["endpointPrefix"]))
    return prefixes


def slim_endpoints(endpoints: dict[str, Any], prefixes: set[str]) -> dict[str, Any]:
    """``endpoints.json`` with each partition's services cut down to ``prefixes``."""
    partitions = [
        {
            **partition,
            "services": {
                name: service
                for name, service in partition.get("services", {}).items()
                if name in prefixes
            },
        }
        for partition in endpoints["partitions"]
    ]
    return {**endpoints, "partitions": partitions}


def _undocumented(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _undocumented(v) for k, v in node.items() if k != "documentation"}
    if isinstance(node, list):
        return [_undocumented(v) for v in node]
    return node


def without_documentation(model: dict[str, Any]) -> dict[str, Any]:
    """A service model without the documentation of itself, its operations and shapes."""
    kept = {k: v for k, v in model.items() if k != "documentation"}
    for part in DOCUMENTED:
        if part in kept:
            kept[part] = _undocumented(kept[part])
    return kept


def slim(bundle: Path, services: frozenset[str] = SERVICES) -> Slimmed:
    """Rewrite ``bundle`` keeping botocore's data for ``services`` only."""
    size_before = bundle.stat().st_size
    with zipfile.ZipFile(bundle) as source:
        names = source.namelist()
        present = {s for s in map(_service_of, names) if s is not None}
        if ENDPOINTS not in names or not services <= present:
            raise SlimError(
                f"{bundle}: expected botocore's endpoints.json and the models of "
                f"{', '.join(sorted(services))}; missing "
                f"{', '.join(sorted(services - present)) or 'endpoints.json'}"
            )
        prefixes = endpoint_prefixes(source, services)
        written = bundle.with_suffix(".zip.tmp")
        with zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                service = _service_of(info.filename)
                if service is not None and service not in services:
                    continue
                data = source.read(info)
                if info.filename == ENDPOINTS:
                    kept = slim_endpoints(json.loads(data), prefixes)
                    data = json.dumps(kept, separators=(",", ":")).encode()
                elif service is not None and info.filename.endswith(MODEL):
                    model = without_documentation(json.loads(gzip.decompress(data)))
                    data = json.dumps(model, separators=(",", ":")).encode()
                    info = _renamed(info, info.filename.removesuffix(".gz"))
                elif service is not None and info.filename.endswith(RULES):
                    rules = json.loads(gzip.decompress(data))
                    data = json.dumps(rules, separators=(",", ":")).encode()
                    info = _renamed(info, info.filename.removesuffix(".gz"))
                target.writestr(info, data)
    written.replace(bundle)
    return Slimmed(len(services), len(present - services), size_before, bundle.stat().st_size)


def _renamed(info: zipfile.ZipInfo, name: str) -> zipfile.ZipInfo:
    """``info`` under another name, with its date and permissions."""
    renamed = zipfile.ZipInfo(name, info.date_time)
    renamed.external_attr = info.external_attr
    renamed.compress_type = zipfile.ZIP_DEFLATED
    return renamed


def main(argv: list[str] | None = None) -> int:
    """Slim ``PACKAGE_DIR/deployment.zip`` down to the services the functions call."""
    parser = argparse.ArgumentParser(prog="python -m ops.slim", description=__doc__)
    parser.add_argument("package_dir", type=Path, help="what `chalice package` wrote")
    args = parser.parse_args(argv)
    bundle: Path = args.package_dir / BUNDLE
    try:
        done = slim(bundle)
    except SlimError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{bundle}: botocore data for {', '.join(sorted(SERVICES))} only "
        f"({done.services_dropped} services dropped; "
        f"{done.size_before / 1e6:.1f} MB -> {done.size_after / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
