"""A worker process: one warm Lambda container running whatever job the soak sends it.

Started with multiprocessing's ``spawn`` method, so it imports the code fresh, like a
new container, and sets up its own fault injection on its own clients. Jobs and
results are plain dicts over a pipe.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from chalicelib.run import RunSummary
from tests.chaos.faults import Injector


def main(conn: Connection, env: dict[str, str], log_path: str) -> None:
    """Serve jobs from ``conn`` until it sends ``None``."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)  # the service's JSON logs and EMF documents go to the worker's log
    os.dup2(log, 2)
    os.environ.update(env)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from chalicelib.config import Settings
    from tests.chaos import adapters
    from tests.chaos.faults import Injector, no_retry_sleeps

    no_retry_sleeps()
    settings = Settings.from_env()
    injector = Injector(settings.tables.notifications)
    conn.send({"ready": os.getpid()})
    while True:
        job = conn.recv()
        if job is None:
            return
        ses, dynamodb = adapters.clients_in_use(settings)
        injector.instrument_ses(ses)
        for client in dynamodb:
            injector.instrument_dynamodb(client)
        conn.send(run(job, injector))


def run(job: dict[str, Any], injector: Injector) -> dict[str, Any]:
    """Run one job: an invocation or a batch of SES events."""
    from freezegun import freeze_time

    from tests.chaos import adapters
    from tests.chaos.faults import SimulatedCrash

    now = datetime.fromisoformat(job["now"])
    injector.begin(job.get("rates"), job.get("seed", 0), now, job["kind"])
    result: dict[str, Any] = {"outcome": "ok"}
    try:
        if job["kind"] == "invoke":
            summary = adapters.invoke_scheduled(
                job["check"], job["event"], now, injector.remaining_ms()
            )
            result["summary"] = _counters(summary)
        elif job["kind"] == "ses_events":
            # Each event is one invocation of record_ses_events; one that fails or dies
            # is handed back for EventBridge to deliver again.
            failed: list[int] = []
            with freeze_time(now) as frozen:
                for index, (when, event) in enumerate(job["events"]):
                    frozen.move_to(datetime.fromisoformat(when))
                    try:
                        adapters.invoke_ses_event(event)
                    except (Exception, SimulatedCrash) as exc:
                        failed.append(index)
                        error = f"record_ses_events: {type(exc).__name__}: {exc}"
                        result.setdefault("error", error[:300])
            result["redeliver"] = failed
    except SimulatedCrash as exc:
        result["outcome"] = "crashed"
        result["error"] = str(exc)
    except adapters.EventTooOld as exc:
        result["outcome"] = "refused"
        result["error"] = str(exc)[:300]
    except adapters.DeliveryIncomplete as exc:
        result["outcome"] = "incomplete"
        incomplete: RunSummary | None = getattr(exc, "summary", None)
        result["summary"] = _counters(incomplete.as_dict() if incomplete is not None else {})
        result["error"] = str(exc)[:300]
    except Exception as exc:
        result["outcome"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc()
    injected, accepted, rejected = injector.end()
    result["injected"] = injected
    result["accepted"] = accepted
    result["rejected"] = rejected
    return result


def _counters(summary: dict[str, Any]) -> dict[str, int]:
    names = ("sent", "failed", "retrying", "invalid", "skipped", "deferred")
    return {name: int(summary.get(name) or 0) for name in names}
