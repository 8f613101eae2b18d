"""``python -m tests.fuzz [--items N] [--seed S] [--cases C]``: the hostile-input fuzz.

Prints a table, then one line ``fuzz: <items> hostile items, <crashes> crashes,
<unreported> unreported, <injections> header injections, <unsafe> unsafe messages``;
exits 1 when any of these, a missed valid notice, an unexpected message, a duplicate
or a false report is not zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from contextlib import redirect_stdout

from chalicelib.observability import logger
from tests.fuzz.harness import explore, final_line, table


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz and return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--items", type=int, default=10_000, help="hostile items (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--cases", type=int, default=60, help="cases per world (default 60)")
    args = parser.parse_args(argv)
    # The service logs every skipped item and prints each run's metrics as JSON on
    # stdout: thousands of lines here, where the table is what matters.
    logger.setLevel(logging.CRITICAL)
    started = time.perf_counter()
    with open(os.devnull, "w") as sink, redirect_stdout(sink):
        tally = explore(args.items, args.seed, args.cases)
    print(table(tally))
    for example in tally.examples:
        print(f"  e.g. {example}")
    print(f"time: {time.perf_counter() - started:.1f} s")
    others = {
        "valid notices missed": tally.missed,
        "unexpected messages": tally.unexpected,
        "reports repeated": tally.duplicate_reports,
        "valid items reported as bad": tally.false_reports,
        "reports not shortened": tally.untruncated,
    }
    if any(others.values()):
        print("FAILED also: " + ", ".join(f"{v} {k}" for k, v in others.items() if v))
    print(final_line(tally))
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
