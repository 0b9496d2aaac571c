"""'actionhub' for the peers harness (../shared/bench-peers): descriptor, light imports only.

    ACTIONHUB_VENV=/path/to/actionhub/.venv ../shared/bench-peers/run.sh \
        --runners-dir /path/to/actionhub/bench --systems floor,trio-floor,actionhub

Workers: ``python -m actionhub_runner worker`` per process: one `ActionHub` on the Redis streams
bus with one action whose group runs ``spec.conc`` workers (no scaling, so every row gets the
same concurrency as the peers) and calls ``harness.common.handle_trio``. Producer: one trio task
calling ``hub.publish`` per message, or ``hub.publish_many`` per batch when
``ACTIONHUB_BENCH_BATCH`` > 1 (the W1-e2e figure of issue 6).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

NAME = "actionhub"
VENV = os.environ.get("ACTIONHUB_VENV", str(Path(__file__).resolve().parent.parent / ".venv"))
PACKAGES = ["actionhub", "trio", "redis", "hiredis", "orjson"]
PRODUCER_LOOP = "trio"


#: messages per hub.publish_many call in the producer; 1 means one hub.publish per message.
#: Batching only where the row measures producer throughput (W1-e2e); paced rows send each at once.
def batch_size(workload: str) -> int:
    return int(os.environ.get("ACTIONHUB_BENCH_BATCH", "100" if workload == "W1-e2e" else "1"))


def settings(spec) -> str:  # type: ignore[no-untyped-def]
    batch = batch_size(spec.workload)
    producer = f"hub.publish_many per {batch}" if batch > 1 else "hub.publish per message"
    return (
        f"{spec.procs} hub process(es) x {spec.conc} workers (min=max); Redis streams bus, "
        f"at-least-once (ack after the action); producer: {producer} from one trio task"
    )


def handler_procs(spec) -> int:  # type: ignore[no-untyped-def]
    return int(spec.procs)


def worker_commands(spec) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return [[spec.python, "-m", spec.module or __name__, "worker"] for _ in range(spec.procs)]


def producer():  # type: ignore[no-untyped-def]
    from actionhub_app import Producer

    return Producer()


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    import trio
    from actionhub_app import serve

    trio.run(serve)
