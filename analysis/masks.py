"""What the masks are: how much the masks of two runs overlap against chance, how stable they are from round to
round, how many kept weights flip sign, and how far each mask-0 action sets pruned weights from where training sent
them. Read from the artifacts lottery runs store (GridFS): ``init.pt`` (initial weights and biases) and
``round_XX.pt`` ({"final": weights and biases at the end of round XX's training, "mask": its mask, ...}).

    from analysis import masks
    store = masks.load("127.0.0.1:27017:lottery", where={"data": "fashion_mnist"})   # a MaskStore
    pairs = masks.overlaps(store, "criterion")   # also "seed", "round", or any config column such as "mask1"
    fig = masks.overlap_figure(pairs)            # Jaccard vs percent remaining, one panel per layer, chance dashed
    store.flips                                   # kept weights whose sign differs between init and final
    masks.mask0_prediction(store)                 # mask-0 actions: alignment with training, distance to destination

Overlap of two masks of one layer: the Jaccard index |A & B| / |A | B|, and the Jaccard index expected by chance at
those densities: two independent uniform masks with |A| and |B| kept of n weights meet in a hypergeometric number
I of weights, and ``chance_jaccard`` is E[I / (|A| + |B| - I)] summed over I's distribution, exactly. Pairs:
``overlaps(store, "seed")``: runs of one condition (same config but the seed), at the same round;
``overlaps(store, column)``: runs of one seed whose configs differ in ``column`` only (e.g. the criterion), at the
same round; ``overlaps(store, "round")``: rounds k-1 and k of one run. A round's mask is a subset of the previous
one (iterative pruning), so the round pairs overlap exactly by the kept fraction, 1 - prune rate: they measure the
schedule, and show where chance would put two unrelated masks of those densities.

Sign flips (``store.flips``): per (run, round, layer), of the weights the round's mask keeps, how many have a
final sign (end of the round's training) other than their initial sign (``init.pt``).

The mask-0 prediction (masking as training, rebuttal 2 and 5): a pruned weight frozen at value v, which training
last sent to d (its value at the end of the last round it trained in), and which started at w_i. Two predictors,
sums over the pruned weights: ``alignment`` = sum (v - w_i)(d - w_i) / sum (d - w_i)^2, the part of training's move
the action repeats (0 for ``init``, frozen where it started; a zero where training moved the weight toward zero
counts for, a zero where it moved it away against), and ``distance`` = sum (v - d)^2 / sum (w_i - d)^2, how far
from where training sent them the action leaves them (1 for ``init``). The frozen values are read from the run's
own final weights (a masked layer holds its pruned weights at their mask-0 values), so random actions are measured
as drawn. Predicted order: higher alignment (or smaller distance), higher accuracy.

Functions return pandas DataFrames and matplotlib Figures (``analysis.figures.save`` writes one); torch is needed
only to read the artifacts (imported when ``load`` runs).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import re
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from scipy.special import gammaln

from analysis import figures
from analysis.conditions import condition_columns
from analysis.query import QueryError, connect, load_runs, resolve
from analysis.stats import one_per_point
from analysis.tables import markdown_table

ROUND_ARTIFACT = re.compile(r"round_(\d+)\.pt$")
LABEL_COLUMNS = ("criterion",)  # what names a run in the figures when no condition column varies


# ------------------------------------------------------------------------------------------------ overlap arithmetic


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two boolean arrays (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def _log_choose(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


@functools.lru_cache(maxsize=4096)
def chance_jaccard(n: int, kept_a: int, kept_b: int) -> float:
    """The expected Jaccard index of two independent uniform random subsets of sizes ``kept_a`` and ``kept_b`` of
    ``n`` items: E[I / (kept_a + kept_b - I)] with I hypergeometric (population n, kept_a marked, kept_b drawn),
    summed over I's whole support (the probabilities from log-gamma: milliseconds for a layer of millions)."""
    if not 0 <= kept_a <= n or not 0 <= kept_b <= n:
        raise ValueError(f"kept counts must be in [0, {n}], got {kept_a} and {kept_b}")
    if kept_a + kept_b == 0:
        return 1.0
    i = np.arange(max(0, kept_a + kept_b - n), min(kept_a, kept_b) + 1, dtype=np.float64)
    log_pmf = _log_choose(kept_a, i) + _log_choose(n - kept_a, kept_b - i) - _log_choose(n, kept_b)
    return float(np.sum(np.exp(log_pmf) * i / (kept_a + kept_b - i)))


def _pair_row(a: np.ndarray, b: np.ndarray) -> dict:
    inter, union = int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))
    n, ka, kb = a.size, int(np.count_nonzero(a)), int(np.count_nonzero(b))
    return {"size": n, "kept_a": ka, "kept_b": kb, "intersection": inter, "union": union,
            "jaccard": 1.0 if union == 0 else inter / union, "chance": chance_jaccard(n, ka, kb),
            "percent_remaining": 100.0 * kb / n}


# ------------------------------------------------------------------------------------------------ the store


@dataclasses.dataclass
class MaskStore:
    """The masks of lottery runs read from their artifacts, and what was measured while reading them.

    ``runs``: one row per run (run and config columns of ``analysis.load_runs`` and ``label``, the run's
    criterion / mask1 / mask0 where they vary); ``masks[(run_id, round)]``: {layer: flat boolean array};
    ``flips``: one row per (run, round, layer); ``mask0``: one row per (run, round >= 1, layer) with the sums of
    the mask-0 prediction (see the module docstring)."""

    runs: pd.DataFrame
    masks: dict[tuple[int, int], dict[str, np.ndarray]]
    flips: pd.DataFrame
    mask0: pd.DataFrame

    @property
    def layers(self) -> list[str]:
        return sorted({layer for masks in self.masks.values() for layer in masks})


def _read(fs, file_id) -> dict:
    import torch  # only to read the artifacts

    return torch.load(io.BytesIO(fs.get(file_id).read()), weights_only=True)


def _arrays(tensors: Mapping[str, Any], names) -> dict[str, np.ndarray]:
    return {name: tensors[name].detach().cpu().numpy().reshape(-1) for name in names}


def _varying(runs: pd.DataFrame) -> list[str]:
    """The condition columns (config but seed and execution keys) whose values differ across ``runs``."""
    return [c for c in condition_columns(runs) if runs[c].map(str).nunique() > 1]


def _labels(runs: pd.DataFrame) -> pd.Series:
    """A run's name in figures: its values of the condition columns that vary (the criterion where nothing does)."""
    varying = _varying(runs) or [c for c in LABEL_COLUMNS if c in runs][:1]
    if not varying:
        return pd.Series("run", index=runs.index)
    return runs[varying].astype(str).agg(" / ".join, axis=1)


def _measure_run(fs, artifacts: dict[str, Any], run_id: int, percent: dict[int, float]):
    """Masks, sign flips and mask-0 sums of one run, round by round (one round's tensors in memory at a time)."""
    rounds = sorted(int(m.group(1)) for name in artifacts if (m := ROUND_ARTIFACT.match(name)))
    init_state = _read(fs, artifacts["init.pt"])
    masks, flips, mask0 = {}, [], []
    init = destination = None
    for k in rounds:
        saved = _read(fs, artifacts[f"round_{k:02d}.pt"])
        mask = _arrays(saved["mask"], sorted(saved["mask"]))
        final = _arrays(saved["final"], mask)
        if init is None:
            init = _arrays(init_state, mask)
        masks[(run_id, k)] = mask
        if destination is not None:
            for layer, keep in mask.items():
                pruned = ~keep
                v, d, w = (x[layer][pruned].astype(np.float64) for x in (final, destination, init))
                mask0.append({"run_id": run_id, "round": k, "percent_remaining": percent.get(k), "layer": layer,
                              "pruned": int(pruned.sum()), "to_destination": float(np.sum((v - d) ** 2)),
                              "init_to_destination": float(np.sum((w - d) ** 2)),
                              "along_training": float(np.sum((v - w) * (d - w))),
                              "zeroed": int(np.count_nonzero(v == 0)),
                              "toward_zero": int(np.count_nonzero(np.abs(d) < np.abs(w)))})
        for layer, keep in mask.items():
            flipped = int(np.count_nonzero(np.sign(init[layer][keep]) != np.sign(final[layer][keep])))
            kept = int(keep.sum())
            flips.append({"run_id": run_id, "round": k, "percent_remaining": percent.get(k), "layer": layer,
                          "size": keep.size, "kept": kept, "flipped": flipped,
                          "flipped_fraction": flipped / kept if kept else float("nan")})
        # where training last sent each weight: its final value in the last round it trained in (was kept in)
        destination = final if destination is None else \
            {layer: np.where(mask[layer], final[layer], destination[layer]) for layer in final}
    return masks, flips, mask0


def _artifact_ids(spec, run_ids: list[int]) -> dict[int, dict[str, Any]]:
    """{run id: {artifact name: GridFS file id}} of the runs that stored init.pt and round artifacts (files the
    run document names but GridFS does not hold, e.g. of a run document copied alone, are left out)."""
    client = connect(spec)
    try:
        db = client[spec.db_name]
        named = {doc["_id"]: {a["name"]: a["file_id"] for a in doc.get("artifacts") or []}
                 for doc in db["runs"].find({"_id": {"$in": run_ids}}, {"artifacts": 1})}
        wanted = [i for names in named.values() for i in names.values()]
        stored = {doc["_id"] for doc in db["fs.files"].find({"_id": {"$in": wanted}}, {"_id": 1})} if wanted else set()
    finally:
        client.close()
    out = {}
    for run_id, names in named.items():
        names = {name: file_id for name, file_id in names.items() if file_id in stored}
        if "init.pt" in names and any(ROUND_ARTIFACT.match(n) for n in names):
            out[run_id] = names
    return out


def runs_with_artifacts(runs: pd.DataFrame, mongo=None, db_name: str | None = None) -> list[int]:
    """The completed runs of a ``load_runs`` frame that stored their masks (``init.pt`` and ``round_XX.pt``)."""
    done = runs[runs["status"] == "COMPLETED"] if "status" in runs else runs
    ids = [int(r) for r in done["run_id"].unique()]
    return sorted(_artifact_ids(resolve(mongo, db_name), ids)) if ids else []


def load(mongo=None, db_name: str | None = None, where: Mapping[str, Any] | None = None,
         runs: pd.DataFrame | None = None, replicas: str = "first") -> MaskStore:
    """Read the masks of the completed lottery runs matching ``where`` (or of the runs of a ``load_runs`` frame
    ``runs``) that stored artifacts, one run per point (``replicas``: which, as ``analysis.stats.one_per_point``).
    QueryError when none did."""
    spec = resolve(mongo, db_name)
    frame = load_runs(spec, where=where) if runs is None else runs
    done, _ = one_per_point(frame[frame["status"] == "COMPLETED"], replicas)
    ids = _artifact_ids(spec, [int(r) for r in done["run_id"].unique()]) if not done.empty else {}
    if not ids:
        raise QueryError(f"no completed lottery run in database {spec.db_name!r}"
                         + (f" matching {dict(where)}" if where else "") + " stored its masks (init.pt and "
                         "round_XX.pt artifacts: run with save_artifacts=True)")
    import gridfs

    client = connect(spec)
    masks, flips, mask0 = {}, [], []
    try:
        fs = gridfs.GridFS(client[spec.db_name])
        for run_id, artifacts in sorted(ids.items()):
            rows = done[done["run_id"] == run_id]
            percent = dict(zip(rows["round"].astype(int), rows["percent_remaining"].astype(float)))
            run_masks, run_flips, run_mask0 = _measure_run(fs, artifacts, run_id, percent)
            masks.update(run_masks)
            flips += run_flips
            mask0 += run_mask0
    finally:
        client.close()
    table = done[done["run_id"].isin(ids)].drop_duplicates("run_id").reset_index(drop=True)
    table = table.drop(columns=[c for c in ("round", "percent_remaining") if c in table])
    table["label"] = _labels(table)
    return MaskStore(table, masks, pd.DataFrame(flips), pd.DataFrame(mask0))


def from_arrays(runs: pd.DataFrame, masks: dict[tuple[int, int], dict[str, np.ndarray]]) -> MaskStore:
    """A MaskStore of masks in memory (a notebook's own, or synthetic): ``runs`` has ``run_id``, ``seed`` and the
    config columns; ``masks[(run_id, round)]`` {layer: boolean array}."""
    table = runs.drop_duplicates("run_id").reset_index(drop=True).copy()
    table["label"] = _labels(table)
    flat = {key: {layer: np.asarray(m, dtype=bool).reshape(-1) for layer, m in layers.items()}
            for key, layers in masks.items()}
    return MaskStore(table, flat, pd.DataFrame(), pd.DataFrame())


# ------------------------------------------------------------------------------------------------ overlaps


def _groups(runs: pd.DataFrame, by: str) -> list[pd.DataFrame]:
    """Runs that differ in ``by`` only: same condition (by="seed"), or same seed and condition but ``by``."""
    if by not in runs:
        raise QueryError(f"no column {by!r} to pair runs by; columns: {', '.join(runs.columns)}")
    keys = [c for c in condition_columns(runs, by) if c in runs] + (["seed"] if by != "seed" else [])
    text = runs.assign(**{c: runs[c].map(str) for c in keys})
    return [group for _, group in text.groupby(keys, dropna=False)] if keys else [runs]


def overlaps(store: MaskStore, by: str = "criterion") -> pd.DataFrame:
    """Jaccard overlap and its chance value per layer, for every pair of masks of one kind:

    ``by="round"``: rounds k-1 and k of each run; ``by="seed"``: two seeds of one condition at one round; any other
    column (``criterion``, ``mask1``, ...): two runs of one seed that differ only there, at one round.
    Columns: kind, label (``a vs b``), run_a, run_b, round_a, round_b, layer, size, kept_a, kept_b, intersection,
    union, jaccard, chance, percent_remaining (of the layer, in the second mask)."""
    runs = store.runs
    rows = []
    rounds_of = {}
    for run_id, k in store.masks:
        rounds_of.setdefault(run_id, []).append(k)
    info = runs.set_index("run_id")
    if by == "round":
        pairs = [(r, r, k - 1, k) for r in rounds_of for k in sorted(rounds_of[r]) if k - 1 in rounds_of[r]]
        label = {r: info.at[r, "label"] for r in rounds_of}
        named = [(a, b, ka, kb, label[a]) for a, b, ka, kb in pairs]
    else:
        found = [(a, b) for group in _groups(runs, by)
                 for a, b in itertools.combinations(group.sort_values([by, "run_id"]).to_dict("records"), 2)
                 if str(a[by]) != str(b[by])]
        # what else sets the pairs of one label apart: the columns whose values differ between the pairs
        paired = pd.DataFrame([a for a, _ in found]) if found else runs.iloc[:0]
        context = [c for c in _varying(runs) if c != by and paired[c].map(str).nunique() > 1]
        named = []
        for a, b in found:
            where = ", ".join(f"{c}={a[c]}" for c in context)
            name = a["label"] if by == "seed" else f"{a[by]} vs {b[by]}" + (f" ({where})" if where else "")
            common = sorted(set(rounds_of.get(a["run_id"], [])) & set(rounds_of.get(b["run_id"], [])))
            named += [(a["run_id"], b["run_id"], k, k, name) for k in common]
    for run_a, run_b, round_a, round_b, name in named:
        mask_a, mask_b = store.masks[(run_a, round_a)], store.masks[(run_b, round_b)]
        for layer in sorted(set(mask_a) & set(mask_b)):
            rows.append({"kind": by, "label": name, "run_a": run_a, "run_b": run_b, "round_a": round_a,
                         "round_b": round_b, "layer": layer, **_pair_row(mask_a[layer], mask_b[layer])})
    columns = ["kind", "label", "run_a", "run_b", "round_a", "round_b", "layer", "size", "kept_a", "kept_b",
               "intersection", "union", "jaccard", "chance", "percent_remaining"]
    return pd.DataFrame(rows, columns=columns)


def overlap_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mean (and count) of the Jaccard index and its chance value per (label, layer, round), over the pairs."""
    return (pairs.groupby(["kind", "label", "layer", "round_b"], sort=True)
            .agg(percent_remaining=("percent_remaining", "mean"), pairs=("jaccard", "size"),
                 jaccard=("jaccard", "mean"), jaccard_std=("jaccard", "std"), chance=("chance", "mean"))
            .reset_index().rename(columns={"round_b": "round"}))


def _legend(fig, panels: dict) -> None:
    """The legend in the first panel, or under the panels when it has more than a few entries."""
    first = next(iter(panels.values()))
    handles, labels = first.get_legend_handles_labels()
    if len(labels) <= 5:
        first.legend(fontsize=7, loc="lower left")
    else:
        fig.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=2 if max(map(len, labels)) > 40 else 3, frameon=False)


def _layer_panels(layers: list[str], title: str):
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers) + 0.8, 3.8), squeeze=False, sharey=True)
    fig.suptitle(title, fontsize=10)
    return fig, dict(zip(layers, axes[0]))


def overlap_figure(pairs: pd.DataFrame, title: str | None = None):
    """One panel per layer: the Jaccard index vs the layer's percent remaining, one line per label (mean over
    pairs, the pairs' range shaded), and the overlap expected by chance at those densities (black, dashed)."""
    if pairs.empty:
        raise QueryError("no pairs of masks to draw")
    kind = pairs["kind"].iloc[0]
    layers = sorted(pairs["layer"].unique())
    what = {"round": "consecutive rounds of one run", "seed": "two seeds of one condition"}.get(
        kind, f"runs of one seed that differ in {kind}")
    fig, panels = _layer_panels(layers, title or f"Mask overlap (Jaccard) between {what}")
    for layer, ax in panels.items():
        part = pairs[pairs["layer"] == layer]
        for name, line in part.groupby("label", sort=True):
            agg = line.groupby("percent_remaining")["jaccard"].agg(["mean", "min", "max"]).sort_index()
            color = figures.color(name)
            ax.plot(agg.index, agg["mean"], marker="o", markersize=3, color=color, label=name, linewidth=1.5)
            ax.fill_between(agg.index, agg["min"], agg["max"], color=color, alpha=0.15, linewidth=0)
        chance = part.groupby("percent_remaining")["chance"].mean().sort_index()
        ax.plot(chance.index, chance.values, color="black", linestyle="--", linewidth=1.2, label="chance")
        figures.percent_axis(ax, float(part["percent_remaining"].min()), float(part["percent_remaining"].max()),
                             label="percent of the layer remaining")
        ax.set_title(layer, fontsize=9)
        ax.set_ylim(0, 1.02)
    next(iter(panels.values())).set_ylabel("Jaccard index")
    _legend(fig, panels)
    return fig


def layer_figure(data: pd.DataFrame, value: str, ylabel: str, title: str, linthresh: float | None = None):
    """One panel per layer: ``value`` vs the layer's percent remaining (100 * kept / size), one line per ``label``
    (mean over runs, their range shaded). ``data``: columns layer, label, kept, size and ``value``. ``linthresh``:
    a symmetric-log y-axis, linear below it (fractions from 0.001 to 1 in one figure)."""
    if data.empty:
        raise QueryError(f"nothing to draw: no {value} values")
    data = data.assign(layer_percent=100.0 * data["kept"] / data["size"])
    layers = sorted(data["layer"].unique())
    fig, panels = _layer_panels(layers, title)
    for layer, ax in panels.items():
        part = data[data["layer"] == layer]
        for name, line in part.groupby("label", sort=True):
            agg = line.groupby("layer_percent")[value].agg(["mean", "min", "max"]).sort_index()
            color = figures.color(name)
            ax.plot(agg.index, agg["mean"], marker="o", markersize=3, color=color, label=name, linewidth=1.5)
            ax.fill_between(agg.index, agg["min"], agg["max"], color=color, alpha=0.15, linewidth=0)
        figures.percent_axis(ax, float(part["layer_percent"].min()), float(part["layer_percent"].max()),
                             label="percent of the layer remaining")
        ax.set_title(layer, fontsize=9)
        if linthresh is not None:
            ax.set_yscale("symlog", linthresh=linthresh)
    next(iter(panels.values())).set_ylabel(ylabel)
    _legend(fig, panels)
    return fig


def flips_figure(flips: pd.DataFrame, runs: pd.DataFrame, title: str | None = None):
    """Per layer: the fraction of kept weights whose final sign is not their initial one vs the layer's percent
    remaining, one line per run label (``layer_figure``)."""
    return layer_figure(flips.merge(runs[["run_id", "label"]], on="run_id"), "flipped_fraction",
                        "fraction of kept weights", title or "Kept weights whose sign changed between init and final")


def tie_breaks(runs: pd.DataFrame, store: MaskStore) -> pd.DataFrame:
    """The round records' ``tie_breaks`` per (run, round, layer), with the kept count from the masks: columns
    run_id, seed, label, round, percent_remaining, layer, size, kept, tie_broken, tie_broken_fraction."""
    rows = []
    for record in runs.drop_duplicates(["run_id", "round"]).to_dict("records"):
        for layer, count in (record.get("tie_breaks") or {}).items():
            mask = store.masks.get((record["run_id"], record["round"]), {}).get(layer)
            if mask is None:
                continue
            kept = int(np.count_nonzero(mask))
            rows.append({"run_id": record["run_id"], "seed": record["seed"], "round": record["round"],
                         "percent_remaining": record["percent_remaining"], "layer": layer, "size": mask.size,
                         "kept": kept, "tie_broken": int(count), "tie_broken_fraction": count / kept if kept else 0.0})
    out = pd.DataFrame(rows, columns=["run_id", "seed", "round", "percent_remaining", "layer", "size", "kept",
                                      "tie_broken", "tie_broken_fraction"])
    return out.merge(store.runs[["run_id", "label"]], on="run_id")


def artifact(mongo, db_name: str | None, run_id: int, name: str):
    """One stored artifact of a run (``init.pt``, ``round_03.pt``, ...), as torch saved it."""
    import gridfs

    spec = resolve(mongo, db_name)
    ids = _artifact_ids(spec, [int(run_id)]).get(int(run_id), {})
    if name not in ids:
        raise QueryError(f"run {run_id} in database {spec.db_name!r} has no artifact {name!r}"
                         + (f"; it has {', '.join(sorted(ids))}" if ids else ""))
    client = connect(spec)
    try:
        return _read(gridfs.GridFS(client[spec.db_name]), ids[name])
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------ mask-0 prediction


PREDICTION_COLUMNS = ["run_id", "round", "mask0", "seed", "percent_remaining", "pruned", "alignment",
                      "distance", "zeroed_fraction", "toward_zero_fraction"]
# predictor -> True when a larger value predicts a higher accuracy
PREDICTORS = {"alignment": True, "distance": False}


def mask0_prediction(store: MaskStore) -> pd.DataFrame:
    """One row per (run, round >= 1), all layers summed: mask0, seed, percent_remaining, pruned, alignment and
    distance (see the module docstring), zeroed_fraction (pruned weights frozen at 0) and toward_zero_fraction
    (pruned weights training moved toward zero)."""
    if store.mask0.empty:
        return pd.DataFrame(columns=PREDICTION_COLUMNS)
    sums = store.mask0.groupby(["run_id", "round"]).agg(
        percent_remaining=("percent_remaining", "first"), pruned=("pruned", "sum"),
        to_destination=("to_destination", "sum"), init_to_destination=("init_to_destination", "sum"),
        along_training=("along_training", "sum"), zeroed=("zeroed", "sum"),
        toward_zero=("toward_zero", "sum")).reset_index()
    sums["alignment"] = sums["along_training"] / sums["init_to_destination"]
    sums["distance"] = sums["to_destination"] / sums["init_to_destination"]
    sums["zeroed_fraction"] = sums["zeroed"] / sums["pruned"]
    sums["toward_zero_fraction"] = sums["toward_zero"] / sums["pruned"]
    columns = [c for c in ("run_id", "mask0", "seed") if c in store.runs]
    return sums.merge(store.runs[columns], on="run_id")[PREDICTION_COLUMNS]


def mask0_order(prediction: pd.DataFrame, runs: pd.DataFrame, metric: str = "test_acc",
                predictor: str = "alignment") -> pd.DataFrame:
    """Per percentage: the mask-0 actions in predicted order (by ``predictor``'s mean over seeds, the one predicted
    best first) and in measured order (highest mean ``metric`` first), and Kendall's tau between the two orders
    (1: the same order, -1: reversed)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; valid choices: {', '.join(PREDICTORS)}")
    measured = runs[runs["status"] == "COMPLETED"] if "status" in runs else runs
    means = (prediction.merge(measured[["run_id", "round", metric]], on=["run_id", "round"])
             .groupby(["round", "mask0"]).agg(percent_remaining=("percent_remaining", "mean"),
                                              predicted=(predictor, "mean"), measured=(metric, "mean"),
                                              seeds=("seed", "nunique")).reset_index())
    larger_is_better = PREDICTORS[predictor]
    rows = []
    for k, part in means.groupby("round"):
        by_prediction = part.sort_values("predicted", ascending=not larger_is_better)["mask0"].tolist()
        by_metric = part.sort_values("measured", ascending=False)["mask0"].tolist()
        sign = 1 if larger_is_better else -1
        tau = scipy_stats.kendalltau(sign * part["predicted"], part["measured"]).statistic \
            if len(part) > 1 else np.nan
        rows.append({"round": int(k), "percent_remaining": float(part["percent_remaining"].mean()),
                     "predicted": " > ".join(by_prediction), "measured": " > ".join(by_metric), "kendall_tau": tau,
                     "seeds": int(part["seeds"].min())})
    return pd.DataFrame(rows, columns=["round", "percent_remaining", "predicted", "measured", "kendall_tau", "seeds"])


def mask0_figure(prediction: pd.DataFrame, runs: pd.DataFrame, metric: str = "test_acc", title: str | None = None):
    """Left and middle: each mask-0 action's alignment with training and distance to where training sent the pruned
    weights, vs percent remaining; right: at each percentage, ``metric`` against the alignment, both as differences
    from the mean of the actions at that percentage (the prediction compares actions at one percentage); means over
    seeds."""
    measured = runs[runs["status"] == "COMPLETED"] if "status" in runs else runs
    data = prediction.merge(measured[["run_id", "round", metric]], on=["run_id", "round"])
    means = data.groupby(["mask0", "percent_remaining"])[["alignment", "distance", metric]].mean().reset_index()
    centered = means.groupby("percent_remaining")[["alignment", metric]].transform(lambda c: c - c.mean())
    means = means.assign(alignment_centered=centered["alignment"], measured_centered=centered[metric])
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.4))
    fig.subplots_adjust(wspace=0.38)
    fig.suptitle(title or "Masking as training: where each mask-0 action puts the pruned weights", fontsize=10)
    for name, agg in means.groupby("mask0", sort=True):
        agg = agg.sort_values("percent_remaining")
        style = figures.style(name)
        left.plot(agg["percent_remaining"], agg["alignment"], marker="o", markersize=3, label=name, **style)
        middle.plot(agg["percent_remaining"], agg["distance"], marker="o", markersize=3, label=name, **style)
        right.scatter(agg["alignment_centered"], agg["measured_centered"], s=18, label=name,
                      color=style["color"], edgecolors="black" if name in figures.baseline_names() else "none")
    low, high = float(data["percent_remaining"].min()), float(data["percent_remaining"].max())
    figures.percent_axis(left, low, high)
    figures.percent_axis(middle, low, high)
    left.set_ylabel("alignment with training\nsum (v - w_i)(d - w_i) / sum (d - w_i)^2; init = 0")
    middle.set_ylabel("distance to where training sent them\nsum (v - d)^2 / sum (d - w_i)^2; init = 1")
    right.set_xlabel("alignment - mean of the actions at that percentage")
    right.set_ylabel(f"{metric.replace('_', ' ')} - mean of the actions\nat that percentage")
    right.axhline(0, color="black", linewidth=0.6)
    right.grid(True, alpha=0.25)
    left.legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------------------------------ for the report


def report_section(runs: pd.DataFrame, mongo, db_name: str | None, out: Path) -> tuple[list[Path], list[str],
                                                                                        list[str]]:
    """The masks section of ``analysis.report``: (files, report.md lines, notes); nothing when no run of ``runs``
    stored its masks."""
    spec = resolve(mongo, db_name)
    if not runs_with_artifacts(runs, spec):
        return [], [], ["masks: no completed run stored its masks (save_artifacts=True): no masks section"]
    store = load(spec, runs=runs)
    folder = Path(out) / "masks"
    folder.mkdir(parents=True, exist_ok=True)
    files, lines, notes = [], ["### What the masks are", ""], []
    kinds = [k for k in ("criterion", "mask1", "mask0", "seed", "round") if k == "round" or k == "seed"
             or store.runs[k].nunique() > 1]
    summaries = []
    for kind in kinds:
        pairs = overlaps(store, kind)
        if pairs.empty:
            notes.append(f"masks: no pairs of runs that differ in {kind} only")
            continue
        paths = figures.save(overlap_figure(pairs), folder, f"overlap_{kind}")
        csv = folder / f"overlap_{kind}.csv"
        pairs.to_csv(csv, index=False)
        files += paths + [csv]
        lines += [f"![overlap by {kind}]({p.relative_to(out).as_posix()})" for p in paths if p.suffix == ".png"]
        summaries.append(overlap_summary(pairs))
    if summaries:
        summary = pd.concat(summaries)
        last = summary[summary["round"] == summary.groupby(["kind", "label", "layer"])["round"].transform("max")]
        lines += ["", "Overlap at each pair's last round (mean over pairs; chance: independent masks of those "
                  "densities):", "", markdown_table(last.drop(columns=["jaccard_std"]))]
    if not store.flips.empty:
        paths = figures.save(flips_figure(store.flips, store.runs), folder, "sign_flips")
        csv = folder / "sign_flips.csv"
        store.flips.merge(store.runs[["run_id", "label", "seed"]], on="run_id").to_csv(csv, index=False)
        files += paths + [csv]
        lines += [f"![sign flips]({p.relative_to(out).as_posix()})" for p in paths if p.suffix == ".png"]
    prediction = mask0_prediction(store)
    if "mask0" in store.runs and store.runs["mask0"].nunique() > 1 and not prediction.empty:
        order = mask0_order(prediction, runs)
        paths = figures.save(mask0_figure(prediction, runs), folder, "mask0_prediction")
        csv = folder / "mask0_prediction.csv"
        prediction.to_csv(csv, index=False)
        files += paths + [csv]
        lines += [f"![mask-0 prediction]({p.relative_to(out).as_posix()})" for p in paths if p.suffix == ".png"]
        lines += ["", "Mask-0 actions, predicted (the most aligned with training's move of the pruned weights "
                  "first) and measured (highest test accuracy first):", "", markdown_table(order)]
    notes.append(f"masks: {len(store.runs)} runs' masks read ({len(store.masks)} rounds)")
    return files, lines + [""], notes
