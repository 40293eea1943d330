"""ResNet-20 (He et al. 2016, CIFAR variant) in the model registry: its layers, masks, criteria, treatments, training
settings, and lottery and Supermask runs on data in the CIFAR-10 on-disk format."""

import pytest
import torch
from torch import nn

from masking import criteria, hashing, models, pruning, training, treatments
from tests.test_cifar_format import write_cifar

# conv1; stage 1: six 16->16; stage 2: 16->32 then five 32->32; stage 3: 32->64 then five 64->64; fc 64->10
SHAPES = ([(16, 3, 3, 3)] + [(16, 16, 3, 3)] * 6 + [(32, 16, 3, 3)] + [(32, 32, 3, 3)] * 5
          + [(64, 32, 3, 3)] + [(64, 64, 3, 3)] * 5 + [(10, 64)])


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def bn_state(net):
    return {k: v.clone() for k, v in net.state_dict().items() if ".bn" in k or k.startswith("bn.")}


def test_resnet20_layers_and_masks_cover_exactly_the_conv_and_fc_weights():
    net = models.build("resnet20", seed=0, kind="masked")
    roles = net.layer_roles()
    weights = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert set(roles) == weights and len(roles) == 20
    assert [tuple(net.state_dict()[n].shape) for n in roles] == SHAPES
    assert list(roles.values()) == ["conv"] * 19 + ["output"]
    assert sum(l.weight.numel() for l in net.prunable_layers().values()) == 268_336  # "0.27M" in He et al.
    # nothing else carries a mask: no conv bias, batch norm and the fc bias untouched
    masked = {n for n, m in net.named_modules() if hasattr(m, "mask")}
    assert {f"{n}.weight" for n in masked} == set(roles)
    assert all(net.state_dict()[n].dtype == torch.bool for n in (f"{m}.mask" for m in masked))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 19
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert models.spec("resnet20").rates == {"conv": 0.1, "output": 0.1}


def test_resnet20_same_init_whatever_the_kind_and_supermask_trains_scores_only():
    hashes = {hashing.state_hash({n: l.weight for n, l in models.build("resnet20", 3, kind).prunable_layers().items()})
              for kind in models.KINDS}
    assert len(hashes) == 1
    net = models.build("resnet20", 3, "supermask")
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".scores") for n in trainable) and len(trainable) == 20


@pytest.mark.parametrize("criterion", criteria.names())
def test_every_criterion_and_treatment_on_resnet20(criterion):
    """A round with each criterion (and, spread over the criteria, each mask-1 and mask-0 action): the mask nests,
    batch norm and the fc bias are rewound and never masked, pruned weights stay frozen under weight decay."""
    i = criteria.names().index(criterion)
    mask1 = treatments.mask1_names()[i % len(treatments.mask1_names())]
    mask0 = treatments.mask0_names()[i % len(treatments.mask0_names())]
    net = models.build("resnet20", seed=1, kind="masked")
    init = {k: v.clone() for k, v in net.state_dict().items()}
    roles = net.layer_roles()
    final = {k: v + 0.01 * torch.randn_like(v) if k in roles else v for k, v in init.items()}
    mask = pruning.prune(criterion, init, final, pruning.Mask.ones({n: init[n] for n in roles}),
                         pruning.layer_rates(roles, net.arch.rates), torch.Generator().manual_seed(0))
    assert mask.is_subset_of(pruning.Mask.ones({n: init[n] for n in roles}))
    assert all(int((~mask[n]).sum()) == criteria.num_to_prune(init[n].numel(), 0.1) for n in roles)
    net.train()
    net(torch.rand(4, 3, 32, 32))  # moves the running statistics: apply_ticket must rewind them
    pruning.apply_ticket(net, init, final, mask, mask1, mask0, torch.Generator().manual_seed(1))
    assert all(torch.equal(v, init[k]) for k, v in bn_state(net).items())
    frozen = {n: net.state_dict()[n][~mask[n]].clone() for n in roles}
    opt = training.make_optimizer(net, "sgd_he2016", 0.1)
    training.train_step(net, opt, torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    assert all(torch.equal(net.state_dict()[n][~mask[n]], frozen[n]) for n in roles)
    assert not torch.equal(net.state_dict()["bn.weight"], init["bn.weight"])  # batch norm trains, unmasked


def test_sgd_he2016_momentum_weight_decay_and_step_decay():
    param = nn.Parameter(torch.ones(3))
    opt = training.OPTIMIZERS.get("sgd_he2016")([param], 0.1)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 1e-4
    lrs = []
    for _ in range(48_001):
        opt.step()  # no gradient: only the schedule's step count moves
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[31_998] == 0.1 and lrs[31_999] == pytest.approx(0.01) and lrs[47_999] == pytest.approx(0.001)


def test_lottery_and_supermask_runs_of_resnet20_on_cifar_format(tmp_path):
    from experiments.lottery import ex as lottery
    from experiments.supermask import ex as supermask

    write_cifar(tmp_path)
    data = {"name": "cifar10", "root": str(tmp_path), "val_size": 20}
    run = lottery.run(named_configs=["resnet20_cifar10"], config_updates={
        "data": data, "training": {"iterations": 4, "eval_every": 2, "batch_size": 16},
        "pruning": {"rounds": 1}, "seed": 1, "save_artifacts": False})
    cfg = run.config["training"]
    assert (cfg["optimizer"], cfg["lr"], run.config["arch"]["name"]) == ("sgd_he2016", 0.1, "resnet20")
    assert run.config["criterion"]["conv_rate"] == 0.1 and run.config["pruning"]["rounds"] == 24 - 23
    rounds = run.info["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and rounds[1]["percent_remaining"] == pytest.approx(
        100 * (268_336 - sum(criteria.num_to_prune(n, 0.1) for n in [432] + [2304] * 6 + [4608] + [9216] * 5
                             + [18432] + [36864] * 5 + [640])) / 268_336)
    assert rounds[0]["final_hash"] != rounds[1]["final_hash"] and 0 <= rounds[1]["test_acc"] <= 1
    run = supermask.run(config_updates={"arch": {"name": "resnet20"}, "data": data, "seed": 1,
                                        "training": {"iterations": 4, "eval_every": 2, "batch_size": 16},
                                        "supermask": {"eval_samples": 2}, "save_artifacts": False})
    assert 0 <= run.info["test_acc_mean"] <= 1 and 0.3 < run.info["expected_density"] < 0.7
