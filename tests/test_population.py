"""Populations: members trained in lockstep equal their single runs (float64), keep their masks, fail alone."""

from __future__ import annotations

import math
import shlex

import pytest
import torch

from masking import models, population, pruning, rng, supermask, training


def data(shape, n=700, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen).to(dtype)
    y = torch.randint(0, 10, (n,), generator=gen)
    return (x[200:], y[200:]), (x[:200], y[:200])


def ticket(arch, seed, fraction, mask0, shape, dtype=torch.float64):
    """A masked net of ``arch`` from ``seed``, ``fraction`` of each layer pruned at random, in ``dtype``."""
    net = models.build(arch, seed=seed, kind="masked", input_shape=shape)
    init = net.state_dict()
    names = net.layer_roles()
    mask = pruning.prune("random", init, init, pruning.Mask.ones({n: init[n] for n in names}),
                         {n: fraction for n in names}, rng.stream(seed, "prune"))
    pruning.apply_ticket(net, init, init, mask, "original", mask0, rng.stream(seed, "treatment"))
    return net.to(dtype)


MEMBERS = [(1, 0.5, "init"), (2, 0.0, "zero"), (3, 0.3, "random_zero")]  # seed, fraction pruned, mask-0


def single_fit(arch, shape, member, train, val, iterations=40, eval_every=10, lr=1e-3):
    net = ticket(arch, *member, shape)
    optimizer = training.make_optimizer(net, "adam", lr)
    result = training.fit(net, optimizer, train, val, iterations, 20, eval_every, rng.stream(member[0], "data order"))
    return net, result


@pytest.mark.parametrize("arch,shape", [("lenet300_100", (1, 28, 28)), ("conv2", (3, 4, 4))])
def test_float64_members_equal_their_single_runs(arch, shape):
    train, val = data(shape)
    stack = population.Stack([ticket(arch, *m, shape) for m in MEMBERS], "float64")
    optimizer = population.make_optimizer(stack, "adam", 1e-3)
    results = population.fit(stack, optimizer, train, val, 40, 20, 10,
                             [rng.stream(m[0], "data order") for m in MEMBERS])
    for k, member in enumerate(MEMBERS):
        net, single = single_fit(arch, shape, member, train, val)
        got = results[k]
        assert got.best_iteration == single.best_iteration
        assert len(got.curve) == len(single.curve) == 4
        for a, b in zip(got.curve, single.curve):
            assert a["iteration"] == b["iteration"]
            assert a["val_acc"] == b["val_acc"]
            assert abs(a["val_loss"] - b["val_loss"]) < 1e-9
            # training.fit sums its train losses in a float32 scalar: equal to that rounding
            assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-6)
        state = stack.member_state(k)
        final = net.state_dict()
        for name, tensor in final.items():
            if name.endswith(".mask"):
                assert torch.equal(state[name], tensor), name
            else:
                assert float((state[name] - tensor).abs().max()) < 1e-9, name
            if name.endswith(".weight"):  # pruned weights kept their frozen values, bit for bit
                pruned = ~final[name.replace(".weight", ".mask")]
                assert torch.equal(state[name][pruned], tensor[pruned]), name
        loaded = ticket(arch, *member, shape)
        loaded.load_state_dict(got.best_state)
        for name, tensor in single.best_state.items():
            assert float((loaded.state_dict()[name].double() - tensor.double()).abs().max()) < 1e-9, name
        (val_loss, val_acc), = population.evaluate(population.Stack([net], "float64"), *val)
        assert abs(val_loss - single.curve[-1]["val_loss"]) < 1e-9 and val_acc == single.curve[-1]["val_acc"]


@pytest.mark.parametrize("dtype,tolerance", [("float64", 1e-13), ("float32", 1e-5)])
def test_hand_written_fc_gradients_equal_autograd(dtype, tolerance):
    """``fc_gradients`` (the fully connected path of ``train_step``) gives autograd's losses and gradients."""
    shape = (1, 28, 28)
    (x, y), _ = data(shape, dtype=population.dtype_of(dtype))
    stack = population.Stack([ticket("lenet300_100", *m, shape) for m in MEMBERS], dtype)
    idx = torch.stack([torch.randperm(len(x), generator=torch.Generator().manual_seed(k))[:20] for k in range(3)])
    xb, yb = x[idx], y[idx]
    logits = stack(xb)
    losses = torch.nn.functional.cross_entropy(logits.reshape(60, -1), yb.reshape(-1), reduction="none")
    losses = losses.view(3, 20).mean(1)
    losses.sum().backward()
    stack.mask_grads()
    expected = {name: p.grad.clone() for name, p in stack.named_parameters()}
    for fresh in (True, False):  # from no gradients, and over stale ones (written in place)
        if fresh:
            stack.zero_grad(set_to_none=True)
        else:
            for p in stack.parameters():
                p.grad.fill_(7.0)
        got_losses = population.fc_gradients(stack, xb, yb)
        assert float((got_losses - losses.detach()).abs().max()) < tolerance
        for name, p in stack.named_parameters():
            scale = float(expected[name].abs().max())
            assert float((p.grad - expected[name]).abs().max()) <= tolerance * max(scale, 1.0), name
        for layer, keep in stack._keep.items():  # pruned weights get exactly zero
            assert bool((stack.tensor(f"{layer}.weight").grad[keep == 0] == 0).all()), layer
    with pytest.raises(ValueError, match="fully connected"):
        population.fc_gradients(population.Stack([ticket("conv2", *MEMBERS[0], (3, 4, 4))]), xb, yb)


def test_a_batch_order_gives_each_member_its_single_run_batches():
    """Row k of every step's indices is member k's batch: a fresh permutation from its own generator each epoch,
    cut in batches, the last partial batch dropped (what ``training.batch_indices`` yields one net), across
    epochs."""
    seeds = (3, 4, 5)
    order = training.BatchOrder(130, 20, [rng.stream(s, "data order") for s in seeds])
    generators = [rng.stream(s, "data order") for s in seeds]
    singles = [training.batch_indices(130, 20, rng.stream(s, "data order")) for s in seeds]
    for step in range(6 * 3 + 2):  # 6 batches an epoch: three epochs and more
        if step % 6 == 0:
            perms = [torch.randperm(130, generator=g) for g in generators]
        order.advance()
        idx = order.indices()
        assert idx.shape == (3, 20)
        for k, single in enumerate(singles):
            assert torch.equal(idx[k], perms[k][20 * (step % 6):20 * (step % 6 + 1)])
            assert torch.equal(idx[k], next(single))
    x, y = torch.arange(130.0).view(130, 1, 1, 1), torch.arange(130)
    xb, yb = population.gather(x, y, idx)
    assert xb.shape == (3, 20, 1, 1, 1) and torch.equal(xb.flatten(2).squeeze(2), idx.to(xb.dtype))
    assert torch.equal(yb, idx)
    with pytest.raises(ValueError, match="batch size"):
        training.BatchOrder(10, 11, [None])


def test_kept_states_are_each_members_state_when_it_was_kept():
    """``Stack.keep`` copies the members that improved (all at once) and leaves the others' kept states alone."""
    stack = population.Stack([ticket("lenet300_100", *m, (1, 28, 28)) for m in MEMBERS])
    stack.keep([0, 1, 2])
    first = [stack.member_state(k) for k in range(3)]
    with torch.no_grad():
        for p in stack.parameters():
            p.add_(1.0)
    stack.keep([1])
    now = stack.member_state(1)
    for k, expected in ((0, first[0]), (1, now), (2, first[2])):
        kept = stack.member_state(k, stack.kept)
        assert all(torch.equal(kept[name], expected[name]) for name in expected), k
    assert not torch.equal(now["fcs.0.weight"], first[1]["fcs.0.weight"])


@pytest.mark.parametrize("fused", [True, False])
def test_one_adam_over_the_stack_is_one_adam_per_member(fused):
    gen = torch.Generator().manual_seed(0)
    members = [torch.randn(30, 20, generator=gen) for _ in range(3)]
    stacked = torch.nn.Parameter(torch.stack(members))
    singles = [torch.nn.Parameter(m.clone()) for m in members]
    opt_stack = torch.optim.Adam([stacked], lr=1e-2, fused=fused)
    opts = [torch.optim.Adam([p], lr=1e-2, fused=fused) for p in singles]
    for _ in range(20):
        grads = [torch.randn(30, 20, generator=gen) for _ in members]
        stacked.grad = torch.stack(grads)
        opt_stack.step()
        for p, g, opt in zip(singles, grads, opts):
            p.grad = g.clone()
            opt.step()
    for k, p in enumerate(singles):
        assert torch.equal(stacked.detach()[k], p.detach())  # bit for bit, float32


def test_frozen_weights_stay_bit_identical_in_float32_with_weight_decay():
    shape = (1, 28, 28)
    train, val = data(shape, dtype=torch.float32)
    nets = [ticket("lenet300_100", *m, shape, dtype=torch.float32) for m in MEMBERS]
    before = [net.state_dict() for net in nets]
    stack = population.Stack(nets)
    optimizer = population.make_optimizer(stack, "adam", 1e-2, weight_decay=0.1)
    population.fit(stack, optimizer, train, val, 20, 20, 10, [rng.stream(m[0], "data order") for m in MEMBERS])
    for k, state in enumerate(before):
        after = stack.member_state(k)
        for name in ("fcs.0.weight", "fcs.1.weight", "fcs.2.weight"):
            pruned = ~state[name.replace(".weight", ".mask")]
            assert torch.equal(after[name][pruned], state[name][pruned])
            assert not torch.equal(after[name][~pruned], state[name][~pruned])  # kept weights trained


def test_a_member_whose_loss_goes_bad_fails_alone():
    shape = (1, 28, 28)
    train, val = data(shape)
    nets = [ticket("lenet300_100", *m, shape) for m in MEMBERS]
    with torch.no_grad():
        nets[1].fcs[0].bias.fill_(float("nan"))
    stack = population.Stack(nets)
    results = population.fit(stack, population.make_optimizer(stack, "adam", 1e-3), train, val, 40, 20, 10,
                             [rng.stream(m[0], "data order") for m in MEMBERS])
    assert isinstance(results[1], population.MemberFailed) and "iteration 10" in str(results[1])
    for k in (0, 2):
        _, single = single_fit("lenet300_100", shape, MEMBERS[k], train, val)
        assert [p["val_acc"] for p in results[k].curve] == [p["val_acc"] for p in single.curve]


def test_members_must_share_the_architecture():
    with pytest.raises(ValueError, match="share the architecture"):
        population.Stack([models.build("lenet300_100", kind="masked"), models.build("conv2", kind="masked")])
    with pytest.raises(ValueError, match="valid choices: float32, float64"):
        population.dtype_of("float16")


def supermask_net(seed, rescale, shape, dtype=torch.float64):
    net = models.build("lenet300_100", seed=seed, kind="supermask", input_shape=shape, rescale=rescale).to(dtype)
    supermask.set_generator(net, rng.stream(seed, "mask samples"))
    return net


def test_float64_supermask_members_equal_their_single_runs():
    shape = (1, 28, 28)
    train, val = data(shape)
    members = [(1, False), (2, True)]  # seed, dynamic weight rescaling
    stack = population.Stack([supermask_net(*m, shape) for m in members])
    results = population.fit(stack, population.make_optimizer(stack, "adam", 0.1), train, val, 30, 20, 10,
                             [rng.stream(seed, "data order") for seed, _ in members])
    for k, member in enumerate(members):
        net = supermask_net(*member, shape)
        single = training.fit(net, training.make_optimizer(net, "adam", 0.1), train, val, 30, 20, 10,
                              rng.stream(member[0], "data order"))
        assert results[k].best_iteration == single.best_iteration
        for a, b in zip(results[k].curve, single.curve, strict=True):
            assert a["val_acc"] == b["val_acc"] and abs(a["val_loss"] - b["val_loss"]) < 1e-9
        state = stack.member_state(k)
        for name, tensor in net.state_dict().items():
            assert float((state[name] - tensor).abs().max()) < 1e-9, name
        assert abs(stack.expected_density(k) - supermask.expected_density(net)) < 1e-12


# ------------------------------------------------------------------------------ the lottery procedure, populated


@pytest.fixture(scope="module")
def synthetic():
    from experiments import datasets
    return datasets.load("synthetic", "/nonexistent", 500, 0, synthetic_shape="mnist", synthetic_train=1500,
                         synthetic_test=500)


CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                               pytest.mark.skipif(not CUDA, reason="no CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
def test_float64_lottery_members_equal_their_single_runs(synthetic, device):
    """Two criteria x two treatments x two seeds, three rounds: masks identical, numbers equal to 1e-9 (members
    and single runs on the same device)."""
    from masking import lottery, population_procedures
    config = training.TrainingConfig(iterations=20, lr=1.2e-3, batch_size=60, eval_every=10)
    specs = [lottery.LotterySpec("lenet300_100", seed, config, criterion=criterion, mask1=mask1, mask0=mask0,
                                 rounds=2)
             for seed in (1, 2) for criterion in ("large_final", "random")
             for mask1, mask0 in (("original", "zero"), ("signed_constant", "init"))]
    members = [[] for _ in specs]
    placed = training.place(synthetic, device, torch.float64)  # one copy of the data for every member
    setups = [lottery.setup(spec, placed, device, dtype=torch.float64) for spec in specs]
    for results in population_procedures.lottery_rounds(setups):
        for m, result in enumerate(results):
            members[m].append(result)
    for spec, got in zip(specs, members):
        single = list(lottery.iterate_rounds(lottery.setup(spec, synthetic, device, dtype=torch.float64)))
        for a, b in zip(got, single, strict=True):
            ra, rb = a.record.to_dict(), b.record.to_dict()
            assert ra.keys() == rb.keys()
            for key, value in rb.items():  # every field: the same record, to float64 rounding
                if key in ("train_seconds", "final_hash"):  # timing, and weights equal to 1e-9 (below)
                    continue
                if isinstance(value, float):
                    assert abs(ra[key] - value) < 1e-9, (spec, key)
                else:
                    assert ra[key] == value, (spec, key, ra[key], value)
            for name, tensor in b.final.items():
                assert float((a.final[name] - tensor).abs().max()) < 1e-9, name
    assert len({m[1].record.mask_hash for m in members}) == len(specs) // 2  # treatments share the criterion's mask



# on the CPU only: on a GPU a population draws its members' training-time noise from its own generator in one call
# per step (population.Stack.noise), not from each member's, so its members are seeds of their conditions there, not
# replicas of their single runs (tests/test_graphs.py checks the GPU population)
@pytest.mark.parametrize("device", ["cpu"])
def test_float64_supermask_population_equals_single_runs(synthetic, device):
    """Two seeds x two settings (plain; signed constant with rescaling): every record field equal to 1e-9."""
    from masking import population_procedures, supermask_training
    config = training.TrainingConfig(iterations=20, lr=0.1, batch_size=60, eval_every=10)
    specs = [supermask_training.SupermaskSpec("lenet300_100", seed, config, signed_constant=signed, rescale=signed,
                                              eval_samples=3)
             for seed in (1, 2) for signed in (False, True)]
    got = population_procedures.supermasks(specs, synthetic, device=device, dtype=torch.float64)
    for spec, member in zip(specs, got):
        single = supermask_training.run(spec, synthetic, device=device, dtype=torch.float64)
        a, b = member.record.to_dict(), single.record.to_dict()
        for key, value in b.items():
            if key in ("train_seconds", "final_hash"):
                continue
            if value is None:  # a field of an option these specs do not use (start mask, sign variants)
                assert a[key] is None, (spec, key)
                continue
            assert value == a[key] if isinstance(value, (str, int)) else abs(value - a[key]) < 1e-9, (spec, key)
        assert [p["expected_density"] for p in member.curve] == pytest.approx(
            [p["expected_density"] for p in single.curve], abs=1e-12)
        for name, scores in single.scores.items():
            assert float((member.scores[name] - scores).abs().max()) < 1e-9, name


# ------------------------------------------------------------------------ members as runs in the real database

FAST = ["fast", "data.name=synthetic", "training.threads=1", "training.iterations=50"]


@pytest.mark.cuda  # training.device=auto: on the GPU where there is one
def test_members_are_runs_like_single_runs_and_a_bad_member_fails_alone(db_server, db_name, monkeypatch, tmp_path):
    """Three members in one population, the third poisoned (NaN) in round 1: two COMPLETED runs and one FAILED,
    each with the documents, metrics and artifacts of a single run, seen by load_runs like single runs."""
    import analysis
    from experiments import lottery as lottery_exp
    from experiments import population as population_exp
    from experiments.observers import ResilientMongoObserver
    from masking import lottery

    monkeypatch.setenv("TICKETLAB_FAILURE_DIR", str(tmp_path / "failed"))
    db_spec = f"{db_server.address}:{db_name}"
    treat = lottery.treat

    def poisoned_treat(setup, k, mask, previous):
        treat(setup, k, mask, previous)
        if setup.spec.seed == 3 and k == 1:
            with torch.no_grad():
                setup.net.fcs[0].bias.fill_(float("nan"))

    monkeypatch.setattr(lottery, "treat", poisoned_treat)
    members = [["criterion.name=large_final", "seed=1"], ["criterion.name=random", "seed=1"],
               ["treatment.mask1=signed_constant", "seed=3"]]
    runs = population_exp.run_population(members, FAST, db_spec, population_id="p-test", echo=lambda line: None)
    assert [run.status for run in runs] == ["COMPLETED", "COMPLETED", "FAILED"]

    single = lottery_exp.ex.run(config_updates={"criterion": {"name": "large_final"}, "seed": 1,
                                                "data": {"name": "synthetic"},
                                                "training": {"threads": 1, "iterations": 50}},
                                named_configs=["fast"], options={"--mongo_db": db_spec})
    db = db_server.client()[db_name]
    docs = {doc["_id"]: doc for doc in db["runs"].find()}
    single_doc = docs[single._id]
    for index, run in enumerate(runs):
        doc = docs[run._id]
        device = "cuda:0" if CUDA else "cpu"  # training.device=auto, as for the single run
        assert doc["info"]["population"] == {"id": "p-test", "size": 3, "index": index, "device": device}
        assert doc["info"]["execution"]["device"] == single_doc["info"]["execution"]["device"] == device
        assert doc["experiment"]["name"] == "lottery" and doc["status"] == run.status
        assert set(doc["info"]) == set(single_doc["info"]) | {"population"}
        names = {a["name"] for a in doc["artifacts"]}
        metrics = {m["name"] for m in db["metrics"].find({"run_id": run._id})}
        assert metrics == {m["name"] for m in db["metrics"].find({"run_id": single._id})}
        if run.status == "COMPLETED":
            assert set(doc) == set(single_doc)  # the same document: what Omniboard and incense read
            assert doc["omniboard"]["tags"] == ResilientMongoObserver.tags(doc["config"])  # Omniboard's Tags
            assert names == {a["name"] for a in single_doc["artifacts"]}
            assert [r["round"] for r in doc["info"]["rounds"]] == [0, 1, 2]
            assert "round  2" in doc["captured_out"] and doc["result"] == doc["info"]["rounds"][-1]["test_acc"]
    # the member starts where its single run starts (float32 training then rounds differently: see the drift bench)
    member, alone = docs[runs[0]._id]["info"], single_doc["info"]
    assert (member["init_hash"], member["rounds"][0]["start_hash"], member["point"]) == \
        (alone["init_hash"], alone["rounds"][0]["start_hash"], alone["point"])
    bad = docs[runs[2]._id]
    assert [r["round"] for r in bad["info"]["rounds"]] == [0]
    assert "non-finite loss" in "".join(bad["fail_trace"]) and "FAILED" in bad["captured_out"]

    df = analysis.load_runs(f"mongodb://{db_server.address}", db_name)
    by_run = df.groupby("run_id")
    assert set(by_run.groups) == {run._id for run in runs} | {single._id}
    assert by_run["status"].first()[runs[2]._id] == "FAILED" and by_run["round"].max()[runs[0]._id] == 2
    assert set(df[df.run_id == runs[1]._id]["criterion"]) == {"random"}
    assert df[df.run_id == runs[0]._id]["condition"].iloc[0] == df[df.run_id == single._id]["condition"].iloc[0]


@pytest.mark.parametrize("member,difference", [
    ("training.lr=0.1", "training.lr is 0.0012 vs 0.1"),
    ("training.device=cpu", "training.device is 'auto' vs 'cpu'"),  # a population trains on one device
])
def test_members_that_cannot_share_are_one_line_before_anything_runs(db_server, db_name, ticketlab_env, member,
                                                                    difference):
    from tests.conftest import run_cli
    result = run_cli("experiments.population", "-m", f"{db_server.address}:{db_name}",
                     "--members", f"seed=1; seed=2,{member}", "with", *FAST, env=ticketlab_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: member 1 cannot share a population with member 0 ({difference}); members may "
        "differ in seed, criterion, treatment only"]
    assert db_server.client()[db_name]["runs"].count_documents({}) == 0


@pytest.mark.slow
def test_sweep_population_groups_compatible_points_and_skips_what_is_done(db_server, db_name, ticketlab_env,
                                                                          tmp_path):
    from tests.conftest import run_cli
    args = ["experiments.sweep", "-m", f"{db_server.address}:{db_name}", "--criteria", "large_final,random,large_init",
            "--seeds", "1", "--population", "2", "--logs", str(tmp_path / "logs"), "with", *FAST, "pruning.rounds=1"]
    result = run_cli(*args, env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    assert "3 to run as 1 population(s) of at most 2 and 1 single run(s)" in result.stdout
    if not torch.cuda.is_available():  # the user learns that a CPU gains nothing from it
        assert "no GPU here; on a CPU a population trains at about the speed of single runs" in result.stdout
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("population_*.log"))
    assert "experiments.population" in logs  # each population's command is logged (scrubbed)
    runs = list(db_server.client()[db_name]["runs"].find(sort=[("_id", 1)]))
    assert [r["status"] for r in runs] == ["COMPLETED"] * 3
    assert sorted(r["info"].get("population", {}).get("size", 1) for r in runs) == [1, 2, 2]
    assert {r["config"]["criterion"]["name"] for r in runs} == {"large_final", "random", "large_init"}
    again = run_cli(*args, env=ticketlab_env)
    assert again.returncode == 0 and "3 already completed, 0 to run" in again.stdout


def test_sweep_population_on_a_device_slot_trains_there(db_server, db_name, ticketlab_env, tmp_path, monkeypatch,
                                                       capsys):
    """``sweep --population K --gpus ...``: each population takes a device slot and its command says so
    (``training.device=...``); members record the device they trained on. Here a slot named "cpu" stands in for
    a GPU's (the CUDA path is the same command with cuda:N)."""
    from experiments import sweep
    from experiments.base import experiment

    for key, value in ticketlab_env.items():
        monkeypatch.setenv(key, value)
    argv = ["-m", f"{db_server.address}:{db_name}", "--criteria", "large_final,random", "--seeds", "1",
            "--population", "2", "--logs", str(tmp_path / "logs"), "with", *FAST, "pruning.rounds=0"]
    args, _ = sweep.parse_args(argv)
    grid = sweep.grid_points(sweep.build_axes(args, None))
    labels, points = [" ".join(point) for point in grid], [args.shared + point for point in grid]
    configs = [sweep.resolve(experiment("lottery"), point) for point in points]
    db = db_server.client()[db_name]

    def run_on_cpu_slot():
        done = sweep.completed_hashes(f"mongodb://{db_server.address}", db_name, "lottery")
        return sweep.run_grid(args, argv, db, "lottery", labels, points, configs, done, ["cpu"])

    assert run_on_cpu_slot() == 0
    assert "as 1 population(s) of at most 2 and 0 single run(s), 1 at a time x 1 thread(s) on cpu" in \
        capsys.readouterr().out
    log = (tmp_path / "logs" / "population_0000.log").read_text()
    command = shlex.split(log.splitlines()[0])  # the logged command as a shell takes it: pasteable
    assert command[-2:] == ["training.threads=1", "training.device=cpu"]
    assert command[command.index("--members") + 1] == \
        "criterion.name=large_final,seed=1; criterion.name=random,seed=1"
    if not CUDA:  # a user who runs a population on a CPU learns it gains nothing there
        assert "population: note: no GPU here; on a CPU a population trains at about the speed of single runs" in log
    runs = list(db_server.client()[db_name]["runs"].find())
    assert [r["status"] for r in runs] == ["COMPLETED"] * 2
    assert {r["info"]["population"]["device"] for r in runs} == {"cpu"}
    assert {r["config"]["training"]["device"] for r in runs} == {"cpu"}
    assert run_on_cpu_slot() == 0  # again: all done, nothing started
    out = capsys.readouterr().out.splitlines()
    assert "2 already completed, 0 to run" in out[0] and out[-1] == "sweep: nothing to run"
    assert len(list((tmp_path / "logs").iterdir())) == 1


@pytest.mark.cuda  # training.device=auto: on the GPU where there is one
def test_supermask_members_are_runs_like_single_runs(db_server, db_name, monkeypatch, tmp_path):
    from experiments import population as population_exp
    from experiments import supermask as supermask_exp

    monkeypatch.setenv("TICKETLAB_FAILURE_DIR", str(tmp_path / "failed"))
    db_spec = f"{db_server.address}:{db_name}"
    shared = ["fast", "data.name=synthetic", "training.threads=1", "training.iterations=40"]
    runs = population_exp.run_population([["seed=1"], ["seed=2", "supermask.signed_constant=True"]], shared,
                                         db_spec, experiment="supermask", echo=lambda line: None)
    single = supermask_exp.ex.run(config_updates={"seed": 1, "data": {"name": "synthetic"},
                                                  "training": {"threads": 1, "iterations": 40}},
                                  named_configs=["fast"], options={"--mongo_db": db_spec})
    db = db_server.client()[db_name]
    alone = db["runs"].find_one({"_id": single._id})
    for index, run in enumerate(runs):
        doc = db["runs"].find_one({"_id": run._id})
        assert doc["status"] == "COMPLETED" and doc["experiment"]["name"] == "supermask"
        assert doc["info"]["population"]["index"] == index and doc["info"]["population"]["size"] == 2
        assert set(doc["info"]) == set(alone["info"]) | {"population"}
        assert {a["name"] for a in doc["artifacts"]} == {a["name"] for a in alone["artifacts"]}
        assert {m["name"] for m in db["metrics"].find({"run_id": run._id})} == \
            {m["name"] for m in db["metrics"].find({"run_id": single._id})}
        assert "supermask: test acc" in doc["captured_out"]
    member = db["runs"].find_one({"_id": runs[0]._id})["info"]
    assert (member["init_hash"], member["point"]) == (alone["info"]["init_hash"],
                                                               alone["info"]["point"])


def test_the_default_dtype_keeps_the_condition_hashes_of_earlier_runs():
    from ticketlab.identity import condition_hash
    before = {"seed": 1, "training": {"lr": 0.1}}  # a run stored before training.dtype existed
    assert condition_hash({"seed": 1, "training": {"lr": 0.1, "dtype": "float32"}}) == condition_hash(before)
    assert condition_hash({"seed": 1, "training": {"lr": 0.1, "dtype": "float64"}}) != condition_hash(before)
