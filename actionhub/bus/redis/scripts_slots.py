"""The consuming side's scripts as the cluster layout runs them: with a ``#!lua`` first line, so
that Redis refuses a key the script does not declare (in a cluster a script may only touch the
slot of its keys; without a shebang an undeclared key of another slot on the same node passes
silently, docs/design/cluster.md §1). The single layout runs the sources of scripts.py as ever.

The flags keep what each script did without a shebang under ``maxmemory``: a script with a
shebang is refused as a whole when Redis is out of memory unless it says ``allow-oom``, which
those whose commands free or only move memory (acks, claims, trims, releases) say, and
``no-writes`` those that only read. The others were refused at their first write anyway.
"""

from __future__ import annotations

from typing import Any

from . import scripts
from .keys import Keys
from .layout import ClusterKeys

#: flags of each consuming script run with a shebang (scripts not listed: none)
FLAGS: dict[str, str] = {
    scripts.RENEW: "allow-oom",
    scripts.RELEASE_UNSTARTED: "allow-oom",
    scripts.TRIM: "allow-oom",
    scripts.RELEASE_LEASES: "allow-oom",
    scripts.ABANDONED: "no-writes",
    scripts.BACKLOG: "no-writes",
}


def source(keys: Keys, script: str) -> str:
    """``script`` as the layout of ``keys`` runs it: as is in the single layout; with a ``#!lua``
    line (and its `FLAGS`) in the cluster layout."""
    if not isinstance(keys, ClusterKeys):
        return script
    flags = FLAGS.get(script)
    return f"#!lua{f' flags={flags}' if flags else ''}\n{script.lstrip()}"


def register(client: Any, keys: Keys, script: str) -> Any:
    """``client.register_script`` of `source`."""
    return client.register_script(source(keys, script))
