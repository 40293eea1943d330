"""Stable fingerprints of network states, so runs pair across conditions by their initial weights.

Recipe (``state_hash``): sha256 over the tensors in sorted-name order; for each, the UTF-8 name, a NUL, the dtype
string (e.g. ``torch.float32``), a NUL, the shape as comma-separated integers, a NUL, then the raw little-endian
bytes of the contiguous CPU tensor (bool as one byte per element). The hex digest is the hash.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode() + b"\0" + str(tensor.dtype).encode() + b"\0")
        digest.update(",".join(map(str, tensor.shape)).encode() + b"\0")
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
