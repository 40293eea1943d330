"""Random draws from an explicit ``torch.Generator``, returned on the device of the data they index."""

from __future__ import annotations

import hashlib

import torch


def generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A uniform permutation of ``range(n)`` drawn from ``generator``, moved to ``device``."""
    return torch.randperm(n, generator=generator, device=generator_device(generator)).to(device)


def random_signs(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Independent fair +-1 signs shaped like ``like``."""
    bits = torch.randint(0, 2, like.shape, generator=generator, device=generator_device(generator))
    return (bits * 2 - 1).to(device=like.device, dtype=like.dtype)


def seeded(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def derive(seed: int, *tags: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``tags`` (e.g. ``derive(3, "prune", 2)``): independent streams for
    each purpose and round, the same in every process and on every platform."""
    text = "/".join(map(str, (int(seed), *tags)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def stream(seed: int, *tags: object) -> torch.Generator:
    """A CPU generator seeded with ``derive(seed, *tags)``."""
    return seeded(derive(seed, *tags))
