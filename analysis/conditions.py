"""What makes two runs the same condition: pure functions over a run's config (no torch, no Sacred).

``condition_hash(config)``: a stable hash of everything a run computes, seed included, minus execution settings
(data root, threads). The sweep skips a point whose hash matches a COMPLETED run; the analysis groups seeds of one
condition by ``condition_hash(config, ignore_seed=True)``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

# config keys that say how a run executes, not what it computes
EXECUTION_KEYS = frozenset({("data", "root"), ("training", "threads")})
# keys added after runs were stored: hashed only when not at their default, so earlier runs keep their hash
LATER_KEYS = {("training", "dtype"): "float32"}


def condition_hash(config: Mapping, ignore_seed: bool = False) -> str:
    skip = EXECUTION_KEYS | ({("seed",)} if ignore_seed else set())

    def strip(node, path=()):
        if isinstance(node, Mapping):
            return {k: strip(v, path + (k,)) for k, v in sorted(node.items()) if path + (k,) not in skip
                    and not (path + (k,) in LATER_KEYS and v == LATER_KEYS[path + (k,)])}
        return node

    return hashlib.sha256(json.dumps(strip(config), sort_keys=True, default=str).encode()).hexdigest()[:16]
