"""training.device: what it resolves to, refusals in one line before any training, execution info in the run
record (outside the condition), CPU results unchanged, the float32 precision decided and recorded, artifacts of a
GPU run loadable anywhere. The tests marked ``cuda`` use a GPU where torch sees one (``scripts/gpu-check.sh`` runs
them: ``pytest -m cuda``); those that need one are skipped elsewhere: two runs of a seed equal (determinism), the
same masks and treatments as the CPU from the same weights, convolutions in full float32."""

from __future__ import annotations

import pytest
import torch

from ticketlab.identity import point_hash
from ticketlab.schema import EXECUTION_KEYS
from experiments import datasets
from experiments.errors import ConfigError
from masking import hashing, lottery, pruning, rng, training, treatments
from masking.training import TrainingConfig, resolve_device

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
cuda = pytest.mark.cuda  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", "/nonexistent", 500, 0, synthetic_train=1500, synthetic_test=500)


@cuda
def test_device_names_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda:0" if CUDA else "cpu")
    if CUDA:
        assert resolve_device("cuda") == resolve_device("cuda:0") == torch.device("cuda:0")


@pytest.mark.parametrize("name", ["cuda:3", "gpu", "cuda:x", "cuda", ""])
def test_bad_devices_are_refused_naming_the_valid_choices(name):
    if CUDA and name in ("cuda", "cuda:3") and (name == "cuda" or torch.cuda.device_count() > 3):
        pytest.skip("a valid device on this machine")
    with pytest.raises(ValueError) as error:
        resolve_device(name)
    message = str(error.value)
    assert message.startswith(f"training.device={name!r} is not valid: ") and "\n" not in message
    if not CUDA:
        assert message.endswith("this machine has no CUDA device; valid choices: auto, cpu")


def test_the_experiment_refuses_a_bad_device_before_running():
    from experiments import lottery as lottery_ex

    with pytest.raises(ConfigError, match=r"training.device='cuda:7' is not valid: .*valid choices: auto, cpu"):
        lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"},
                          config_updates={"data": {"name": "synthetic"}, "training": {"device": "cuda:7"}})


@cuda
def test_device_is_execution_info_not_condition():
    from experiments import lottery as lottery_ex

    assert "training.device" in EXECUTION_KEYS
    updates = {"data": {"name": "synthetic"}, "seed": 4, "save_artifacts": False, "pruning": {"rounds": 0},
               "training": {"threads": 1, "iterations": 20, "eval_every": 10}}
    runs = [lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"},
                              config_updates={**updates, "training": {**updates["training"], "device": device}})
            for device in ("cpu", "auto")]
    for run, requested in zip(runs, ("cpu", "auto")):
        execution = run.info["execution"]
        assert execution["requested"] == requested and execution["torch"] == str(torch.__version__)
        assert all(type(v) in (str, int, bool, type(None)) for v in execution.values())  # plain values for MongoDB
        assert execution["device"] == ("cuda:0" if CUDA and requested == "auto" else "cpu")
        assert execution["threads"] == 1 and execution["device_name"]
        assert execution["fp32_precision"] == "ieee"  # no TF32 on a GPU either (training.FP32_PRECISION)
    assert runs[0].info["point"] == runs[1].info["point"] == point_hash(runs[0].config)
    if not CUDA:  # the same device: the same results
        strip = lambda run: [{k: v for k, v in r.items() if k != "train_seconds"} for r in run.info["rounds"]]  # noqa
        assert strip(runs[0]) == strip(runs[1])


@cuda
def test_a_checkpoint_moves_to_the_setup_device(data):
    spec = lottery.LotterySpec("lenet300_100", 3, TrainingConfig(iterations=20, lr=1.2e-3, eval_every=10), rounds=2)
    first = list(lottery.iterate_rounds(lottery.setup(spec, data, "cpu")))
    setup = lottery.setup(spec, data, resolve_device("auto"))
    saved = lottery.Checkpoint(0, {k: v.cpu() for k, v in first[0].final.items()},
                               pruning.Mask({k: v.cpu() for k, v in first[0].mask.items()}))
    resumed = list(lottery.iterate_rounds(setup, start=saved))
    assert [r.record.round for r in resumed] == [1, 2]
    assert all(t.device == setup.device for r in resumed for t in (*r.final.values(), *r.mask.values()))
    if setup.device.type == "cpu":
        assert [r.record.final_hash for r in resumed] == [r.record.final_hash for r in first[1:]]


@pytest.fixture
def precision_restored():
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


def test_float32_precision_is_decided_and_read_back(precision_restored):
    """torch runs cuDNN convolutions in TF32 by default (matmuls in full float32); ticketlab sets both to full
    float32 through the fp32_precision API (``device_settings``) and records what is in effect."""
    gpu = torch.device("cuda", 0)  # settings and their read-back need no GPU
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = "none", "tf32"
    assert training.fp32_precision(gpu) == "matmul=ieee,conv=tf32"  # torch's defaults
    training.cuda_precision_settings()
    assert training.fp32_precision(gpu) == training.FP32_PRECISION == "ieee"
    assert training.fp32_precision(torch.device("cpu")) == "ieee"


def test_artifacts_saved_on_a_gpu_load_on_any_machine():
    """torch.save records each tensor's device: an artifact of a GPU run is read back as CPU tensors (--resume,
    supermask.start=run), here one whose tensors say they were saved on cuda:0."""
    import io

    from experiments.resume import load_tensors

    entry = (1, lambda storage: "cuda:0", lambda obj, location: None)  # tags every storage as a GPU's
    torch.serialization._package_registry.insert(0, entry)
    try:
        buffer = io.BytesIO()
        torch.save({"mask": {"fcs.0.weight": torch.tensor([True, False])}}, buffer)
    finally:
        torch.serialization._package_registry.remove(entry)
    if not CUDA:  # a plain torch.load needs that GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    loaded = load_tensors(buffer.getvalue())["mask"]["fcs.0.weight"]
    assert loaded.device == torch.device("cpu") and loaded.tolist() == [True, False]


def test_the_cuda_tests_are_marked_for_the_gpu_check():
    """``pytest -m cuda`` (scripts/gpu-check.sh) selects every test that uses a GPU, not only those named cuda."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p",
                             "no:cacheprovider", "tests/test_devices.py", "tests/test_population.py"],
                            capture_output=True, text=True, timeout=120)
    collected = result.stdout
    for name in ("test_a_checkpoint_moves_to_the_setup_device", "test_device_is_execution_info_not_condition",
                 "test_cuda_runs_of_a_seed_are_identical", "test_cuda_convolutions_run_in_full_float32",
                 "test_float64_lottery_members_equal_their_single_runs[cuda]",
                 "test_members_are_runs_like_single_runs_and_a_bad_member_fails_alone"):
        assert name in collected, collected


# ------------------------------------------------------------------------------------------------ on a GPU only


def _hashes(results):
    return [(r.record.start_hash, r.record.final_hash, r.record.mask_hash, r.record.test_acc) for r in results]


@pytest.fixture
def deterministic_cuda():
    """CUDA settings as a run makes them (training.device_settings), undone after the test."""
    from masking.training import device_settings

    device_settings(resolve_device("cuda"))
    yield
    torch.use_deterministic_algorithms(False)


@cuda
@needs_cuda
def test_cuda_runs_of_a_seed_are_identical(data, deterministic_cuda):
    spec = lottery.LotterySpec("lenet300_100", 5, TrainingConfig(iterations=200, lr=1.2e-3, eval_every=50),
                               criterion="large_final", mask1="signed_constant", mask0="random_zero", rounds=2)
    runs = [list(lottery.iterate_rounds(lottery.setup(spec, data, "cuda"))) for _ in range(2)]
    assert _hashes(runs[0]) == _hashes(runs[1])
    cpu = lottery.setup(spec, data, "cpu")
    assert runs[0][0].record.init_hash == cpu.init_hash  # the same initial weights on every device


@cuda
@needs_cuda
@pytest.mark.parametrize("criterion", ["large_final", "magnitude_increase", "random"])
@pytest.mark.parametrize("mask1,mask0", [("original", "random_zero"), ("reinit", "init"),
                                         ("signed_reshuffle", "zero_if_toward_zero"), ("constant", "zero")])
def test_cuda_draws_the_same_masks_and_treatments_as_the_cpu(criterion, mask1, mask0, deterministic_cuda):
    gen = torch.Generator().manual_seed(0)
    w_init = {"a.weight": torch.randn(300, 784, generator=gen), "b.weight": torch.randn(10, 100, generator=gen)}
    w_final = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in w_init.items()}
    w_final["a.weight"][:5] = w_init["a.weight"][:5]  # ties for magnitude_increase
    mask = pruning.Mask.ones(w_init)

    def draw(device):
        on = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        m = pruning.prune(criterion, on(w_init), on(w_final), pruning.Mask(on(mask)), {k: 0.2 for k in w_init},
                          rng.stream(1, "prune", 1))
        g = rng.stream(1, "treatment", 1)
        values = {k: treatments.mask1(mask1, on(w_init)[k], m[k], g) + treatments.mask0(mask0, on(w_init)[k],
                                                                                        on(w_final)[k], m[k], g)
                  for k in sorted(m)}
        return hashing.state_hash(m), hashing.state_hash(values)

    assert draw("cpu") == draw("cuda")


@cuda
@needs_cuda
def test_cuda_supermask_runs_of_a_seed_are_identical(data, deterministic_cuda):
    from masking import supermask_training

    spec = supermask_training.SupermaskSpec("lenet300_100", 2, TrainingConfig(iterations=100, lr=0.1, eval_every=50),
                                            eval_samples=3)
    records = [supermask_training.run(spec, data, device="cuda").record for _ in range(2)]
    assert records[0].final_hash == records[1].final_hash and records[0].test_acc_mean == records[1].test_acc_mean
    assert records[0].init_hash == supermask_training.run(spec, data, device="cpu").record.init_hash


@cuda
@needs_cuda
def test_cuda_convolutions_run_in_full_float32(deterministic_cuda):
    """After ``device_settings`` a convolution on the GPU matches float64 to float32 rounding (TF32, torch's default
    for cuDNN convolutions, would be off by about 1e-3)."""
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 16, 32, 32, generator=gen), torch.randn(32, 16, 3, 3, generator=gen)
    reference = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    on_gpu = torch.nn.functional.conv2d(x.cuda(), w.cuda(), padding=1).cpu().double()
    assert training.fp32_precision(torch.device("cuda")) == "ieee"
    assert float((on_gpu - reference).abs().max() / reference.abs().max()) < 1e-5
