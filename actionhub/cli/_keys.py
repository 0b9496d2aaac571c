"""``actionhub keys``: the Redis key names of a topic in the bus URL's layout (single node or
cluster: docs/design/cluster.md §5), for debugging and for publishers in other languages."""

from __future__ import annotations

import argparse

import orjson

from ..client import Client
from ..errors import ConfigurationError
from ._common import EXIT_OK, CliError, _client, _topic, _within


async def _keys(args: argparse.Namespace) -> int:
    topic = _topic(args.topic)
    if args.partitions is not None and args.partitions < 1:
        raise CliError(f"--partitions must be at least 1, not {args.partitions}")
    if args.partitions is not None:  # nothing to read: no connection
        try:
            with Client(args.bus) as offline:
                names = offline.key_names(topic, args.key, partitions=args.partitions)
        except ConfigurationError as error:
            raise CliError(str(error)) from None
    else:
        async with _client(args) as client:
            try:
                names = await _within(args.timeout, client.key_names(topic, args.key))
            except ConfigurationError as error:
                raise CliError(str(error)) from None
    if args.json:
        print(orjson.dumps(dict(names)).decode())
        return EXIT_OK
    width = max(len(what) for what, _ in names)
    for what, name in names:
        print(f"{what:<{width}}  {name}")
    return EXIT_OK
