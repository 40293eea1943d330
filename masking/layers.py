"""Masked Linear and Conv2d layers: pruned weights frozen, kept weights trained, at the speed of a plain layer.

The effective weight of a masked layer is ``w * m + frozen * (1 - m)``. Rather than computing that product on
every forward pass (1.4x slower on CPU), the layer stores the effective weight itself in ``weight``:
``set_mask`` writes the frozen values into the pruned positions once, and two guards keep them there:

* a post-accumulate-grad hook zeroes the gradient of pruned positions, so an optimizer sees exactly zero
  gradient there, and moment-based optimizers (Adam, RMSprop, momentum SGD) never move them: their state stays 0;
* an optimizer step post-hook (``guard_optimizer``) writes the frozen values back after each step, which also
  undoes what a zero gradient cannot prevent (weight decay). ``masking.training.make_optimizer`` adds it whenever
  the optimizer has weight decay (it costs about 8% of a LeNet step, so it is left out where it changes nothing).

So ``forward`` is the stock ``F.linear``/``F.conv2d`` on ``weight``. The hook follows the ``weight`` Parameter
even when it is replaced (``deepcopy``, ``load_state_dict(assign=True)``).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn


class MaskedMixin:
    """Adds ``mask`` (bool) and ``frozen`` (values of pruned weights) buffers to a layer with a ``weight``."""

    weight: nn.Parameter

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._ensure_hook()
        return super().forward(x)

    def _init_mask(self) -> None:
        self.register_buffer("mask", torch.ones_like(self.weight, dtype=torch.bool))
        self.register_buffer("frozen", torch.zeros_like(self.weight))
        # float copy of the mask (1 kept, 0 pruned), or None when every weight is kept: multiplying by a float
        # mask is ~40x faster on CPU than masked_fill_/where with a bool mask
        self._keep: torch.Tensor | None = None
        self._hooked: weakref.ref | None = None

    def set_mask(
        self, mask: torch.Tensor, frozen: torch.Tensor | None = None, start: torch.Tensor | None = None
    ) -> None:
        """Install ``mask``; kept weights take ``start`` (default: their current value), pruned ones ``frozen``
        (default 0)."""
        if mask.shape != self.weight.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a torch.bool tensor of shape {tuple(self.weight.shape)}, "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        with torch.no_grad():
            self.mask.copy_(mask)
            self.frozen.copy_(torch.zeros_like(self.frozen) if frozen is None else frozen)
            self.frozen.masked_fill_(self.mask, 0.0)
            if start is not None:
                self.weight.copy_(start)
        self._refresh()

    def _refresh(self) -> None:
        self._keep = None if bool(self.mask.all()) else self.mask.to(self.weight.dtype)
        self.restore_frozen()

    def _apply(self, fn, *args, **kwargs):
        """``.to(device/dtype)``, ``.cuda()``, ``.double()``...: the float mask follows the weight (a mask set before
        the move would otherwise stay on the old device and fail the gradient hook there)."""
        result = super()._apply(fn, *args, **kwargs)
        if self._keep is not None:
            self._keep = self.mask.to(self.weight.dtype)
        return result

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    def restore_frozen(self) -> None:
        """Write the frozen values back into the pruned positions of ``weight``: ``w * keep + frozen``, exact
        since ``frozen`` is 0 where kept and ``keep`` is 0 or 1."""
        if self._keep is not None:
            with torch.no_grad():
                torch.addcmul(self.frozen, self.weight, self._keep, out=self.weight.data)

    def _ensure_hook(self) -> None:
        """Hook the current ``weight`` Parameter (once) so its pruned gradient entries are zeroed."""
        if self._hooked is None or self._hooked() is not self.weight:
            layer_ref = weakref.ref(self)

            def mask_grad(param: torch.Tensor) -> None:
                layer = layer_ref()
                if layer is not None and layer._keep is not None and param.grad is not None:
                    param.grad.mul_(layer._keep)

            self.weight.register_post_accumulate_grad_hook(mask_grad)
            self._hooked = weakref.ref(self.weight)  # a weakref: deepcopy and pickle do not carry it over

    def __getstate__(self):
        state = super().__getstate__()
        state["_hooked"] = None
        return state

    @property
    def num_kept(self) -> int:
        return int(self.mask.sum())


class MaskedLinear(MaskedMixin, nn.Linear):
    """``nn.Linear`` with a mask: same arguments, all weights kept until ``set_mask``."""


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    """``nn.Conv2d`` with a mask: same arguments, all weights kept until ``set_mask``."""


def masked_layers(model: nn.Module) -> dict[str, MaskedMixin]:
    """The masked layers of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, MaskedMixin)}


def guard_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """After every ``optimizer.step()``, restore the frozen values of ``model``'s masked layers.

    Needed only for optimizers that move weights with zero gradient (weight decay); cheap otherwise.
    """
    layers = [layer for layer in masked_layers(model).values()]

    def restore(opt, args, kwargs):
        for layer in layers:
            layer.restore_frozen()

    return optimizer.register_step_post_hook(restore)
