"""The Redis transports, one module per concern.

* `options`: a ``redis://`` URL's options and the redis-py client made from it;
  `keys`, `entries`, `scripts`: what actionhub keeps in Redis, sans I/O (the clients share them);
  `wire`: the trio-driven connection of the hot path.
* `connection`: calls from trio (threads, the trio-driven connections), retried through outages,
  and the bus's lifecycle; `publishing`: publish scripts sent once through lost replies;
  `common`: what both transports share over them (delays, dead letters, replies, control).
* `streams` (``mode=stream``): publishing, acks and the hub-wide chores; `reader`: the hub's one
  wake-up over every consumed stream; `subscription`: one consumer group's reading and settling;
  `reclaim`: taking over what dead hubs left; `letters`: its dead letters' commands; `ordered`:
  partitions and their leases for ordered groups; `watch`: a lazy template before its first
  message.
* `pubsub` (``mode=pubsub``): at-most-once fan-out.

Nothing is imported here: ``import actionhub`` with the memory bus never loads redis-py.
"""
