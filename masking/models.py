"""The networks as plain torch modules, buildable dense, masked or as a Supermask from a seed.

An architecture is data (``ArchSpec``, registered in ``ARCHS``) and a ``family``: one builder in ``FAMILIES``. A
family is its own module that registers its builder and its nets; the package names it once (``masking/__init__.py``
imports it), or, outside the package, ``$TICKETLAB_PLUGINS`` does (docs/extending.md):

* ``plain`` (here, the paper's nets): conv channels with ``"M"`` for a 2x2 max-pool, then fc widths; 3x3 'same'
  convs, ReLU, a 10-way output layer, no batch norm or dropout.
* ``resnet`` (``masking.resnet``): the CIFAR ResNets of He et al. 2016, e.g. ResNet-20.

Every conv and fc weight is Glorot normal and every conv/fc bias zero; layers are initialized in module order
from one generator seeded with ``seed``, so the same seed gives the same initial weights whichever ``kind`` is
built. Masks, criteria and treatments act on the conv and fc weights only (``layer_roles``): biases and
batch-norm parameters are never pruned.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from masking.initializers import glorot_normal_
from masking.layers import MaskedConv2d, MaskedLinear
from masking.rng import seeded
from masking.supermask import SupermaskConv2d, SupermaskLinear, set_signed_constant
from ticketlab.registry import Registry


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    name: str
    dataset: str  # the paper's data set for this net
    input_shape: tuple[int, int, int]
    conv: tuple[int | str, ...]
    fc: tuple[int, ...]
    rates: dict[str, float]  # per-round prune fraction by layer role: conv, fc, output
    lr: float  # the paper's Adam learning rate
    iterations: int  # the paper's training iterations at batch 60
    num_classes: int = 10
    family: str = "plain"  # which FAMILIES builder makes the net
    blocks: int = 0  # resnet: basic blocks per stage (``conv`` then holds the stage widths)
    optimizer: str | None = None  # its usual optimizer (masking.training registry) and batch size; None: the
    batch_size: int | None = None  # defaults of masking.training.TrainingConfig (the paper's Adam at batch 60)
    paper_config: str = ""  # the experiments' named config of its paper settings (default ``paper_<name>``)

    @property
    def config_name(self) -> str:
        return self.paper_config or f"paper_{self.name}"


ARCHS: Registry[ArchSpec] = Registry("architecture")
Builder = Callable[..., nn.Module]  # (spec, linear, conv, input_shape, num_classes) -> module
FAMILIES: Registry[Builder] = Registry("architecture family")


def register(spec: ArchSpec) -> ArchSpec:
    return ARCHS.add(spec.name, spec)


register(ArchSpec("lenet300_100", "mnist", (1, 28, 28), (), (300, 100), {"fc": 0.2, "output": 0.1}, 1.2e-3, 50_000,
                  paper_config="paper_fc"))
register(ArchSpec("conv2", "cifar10", (3, 32, 32), (64, 64, "M"), (256, 256),
                  {"conv": 0.1, "fc": 0.2, "output": 0.1}, 2e-4, 20_000))
register(ArchSpec("conv4", "cifar10", (3, 32, 32), (64, 64, "M", 128, 128, "M"), (256, 256),
                  {"conv": 0.1, "fc": 0.2, "output": 0.1}, 3e-4, 25_000))
register(ArchSpec("conv6", "cifar10", (3, 32, 32), (64, 64, "M", 128, 128, "M", 256, 256, "M"), (256, 256),
                  {"conv": 0.15, "fc": 0.2, "output": 0.1}, 3e-4, 30_000))


names = ARCHS.names
spec = ARCHS.get  # the ArchSpec of a name; a ValueError naming the valid choices otherwise


KINDS = ("dense", "masked", "supermask")


def _layer_types(kind: str, score_init: float, rescale: bool) -> tuple[Callable, Callable]:
    if kind == "dense":
        return nn.Linear, nn.Conv2d
    if kind == "masked":
        return MaskedLinear, MaskedConv2d
    if kind == "supermask":
        return (lambda *a, **k: SupermaskLinear(*a, score_init=score_init, rescale=rescale, **k),
                lambda *a, **k: SupermaskConv2d(*a, score_init=score_init, rescale=rescale, **k))
    raise ValueError(f"unknown model kind {kind!r}; valid choices: {', '.join(KINDS)}")


class Prunable:
    """What every ticketlab net offers the pruning code: its prunable weights and their roles."""

    def layer_roles(self) -> dict[str, str]:
        """Role of each prunable weight by parameter/buffer name, in module order: ``conv`` for every conv,
        ``fc`` for every linear layer but the last, ``output`` for the last."""
        layers = [(name, m) for name, m in self.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        roles = {f"{name}.weight": "conv" if isinstance(m, nn.Conv2d) else "fc" for name, m in layers}
        roles[f"{layers[-1][0]}.weight"] = "output"
        return roles

    def prunable_layers(self) -> dict[str, nn.Module]:
        """The layers whose weights are pruned, by weight name."""
        modules = dict(self.named_modules())
        return {name: modules[name.rsplit(".", 1)[0]] for name in self.layer_roles()}


class Net(Prunable, nn.Module):
    """Convs (each followed by ReLU, pools where the spec says) then fully connected layers."""

    def __init__(self, arch: ArchSpec, linear: Callable, conv: Callable,
                 input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None):
        super().__init__()
        self.arch = arch
        self.input_shape = tuple(input_shape or arch.input_shape)
        channels, height, width = self.input_shape
        self.convs = nn.ModuleList()
        self.pool_after: list[bool] = []
        for item in arch.conv:
            if item == "M":
                self.pool_after[-1] = True
                height, width = height // 2, width // 2
            else:
                self.convs.append(conv(channels, item, kernel_size=3, padding=1))
                self.pool_after.append(False)
                channels = item
        widths = (channels * height * width, *arch.fc, num_classes or arch.num_classes)
        self.fcs = nn.ModuleList(linear(i, o) for i, o in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in zip(self.convs, self.pool_after):
            x = F.relu(conv(x))
            if pool:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        last = len(self.fcs) - 1
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < last:
                x = F.relu(x)
        return x


FAMILIES.add("plain", Net)


def build(
    name: str,
    seed: int = 0,
    kind: str = "dense",
    *,
    score_init: float = 0.0,
    rescale: bool = False,
    signed_constant: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """Architecture ``name`` with Glorot-normal weights drawn from ``seed`` and zero biases.

    ``kind`` is ``dense`` (stock layers), ``masked`` (MaskedLinear/MaskedConv2d, all weights kept) or
    ``supermask`` (frozen weights with scores starting at ``score_init``; ``rescale`` turns on dynamic weight
    rescaling, ``signed_constant`` replaces the weights by std * sign). ``input_shape`` (C, H, W) and
    ``num_classes`` default to the paper's data set for the net; any other data set's shape fits the same layers.
    In a Supermask net only the scores train: batch-norm layers keep their initial affine parameters (1, 0)
    frozen (their running statistics still follow the sampled masks).
    """
    arch = spec(name)
    linear, conv = _layer_types(kind, score_init, rescale)
    net = FAMILIES.get(arch.family)(arch, linear, conv, input_shape, num_classes)
    generator = seeded(seed)
    with torch.no_grad():
        for layer in net.prunable_layers().values():
            glorot_normal_(layer.weight, generator)
            if layer.bias is not None:
                layer.bias.zero_()
    if kind == "supermask":
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.requires_grad_(False)
    if signed_constant:
        if kind != "supermask":
            raise ValueError("signed_constant applies to kind='supermask' only")
        set_signed_constant(net)
    return net


def weight_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every layer's weight and bias (parameters or, in Supermask layers, frozen buffers): the state a
    run's hashes and artifacts describe, the same names for every ``kind``."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()
            if name.endswith((".weight", ".bias"))}

