"""A hub declaring schedules in a process of its own, for the multi-process schedule tests.

    python -m tests.schedule_hub URL --name NAME --schedule NAME:TOPIC:CATCH_UP[:PAYLOAD] ...

Each ``--schedule`` fires ``every=1`` second to TOPIC with that ``catch_up`` (and JSON payload,
default null). No action: the tests read the topics' streams. Prints ``ready`` once serving;
SIGTERM stops it gracefully.
"""

from __future__ import annotations

import argparse

import orjson
import trio

from actionhub import ActionHub
from tests.hub_process import serve_until_terminated


async def serve(url: str, name: str, schedules: list[str]) -> None:
    hub = ActionHub(url, name=name, announce_interval=0.5)
    for spec in schedules:
        schedule, topic, catch_up, *payload = spec.split(":", 3)
        hub.schedule(
            schedule,
            topic=topic,
            every=1,
            catch_up=catch_up,  # type: ignore[arg-type]
            payload=orjson.loads(payload[0]) if payload else None,
        )
    await serve_until_terminated(hub)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--name", required=True)
    parser.add_argument("--schedule", action="append", required=True)
    args = parser.parse_args()
    trio.run(serve, args.url, args.name, args.schedule)


if __name__ == "__main__":
    main()
