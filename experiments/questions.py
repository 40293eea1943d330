"""The rebuttal's open questions and its own claims as studies: run them and write their figures, tables and paired
tests, one command.

    python -m experiments.questions q9        # masks from other points of the trajectory (criterion.source)
    python -m experiments.questions q8        # Supermasks started from a heuristic mask (supermask.start)
    python -m experiments.questions q7        # sign randomisation of learned Supermasks (the q8 runs)
    python -m experiments.questions scaling   # input scaling (data.preprocess) in the untrained-Supermask study
    python -m experiments.questions lfss      # rebuttal 3: the sign criteria trained, and their tie-breaking
    python -m experiments.questions bimodal   # rebuttal 6: bimodal start values (signed_bimodal, the control)
    python -m experiments.questions quadrant  # rebuttal 2: sign-kept vs sign-dropped mask-1 actions (bimodal's runs)
    python -m experiments.questions mask0     # rebuttal 2, 5: masking as training predicts the mask-0 actions
    python -m experiments.questions all|claims [--home DIR] [--port P] [--workers 2] [--seeds 1,2,3]
                                        [--iterations 1500] [--rounds 4] [--report-only]

Like ``experiments.study``: the local run database is started (or reused), the runs go through the sweep (which
skips runs already COMPLETED: running a study again retrains nothing), and the report goes to
``<home>/questions/<study>/report.md`` with PNG/PDF figures and Markdown tables. Every study runs lenet300_100 on
Fashion-MNIST at reduced iterations (``--iterations`` steps per round, evaluated every 100; ``--rounds`` pruning
rounds), seeds ``--seeds``. Every comparison is a paired t-test over the seeds (same seed = same initial
weights) at one pruning percentage, Holm-corrected across the conditions of that percentage
(``analysis.stats.compare``); a star in a figure marks p_holm < 0.05. With three seeds a test has 2 degrees of
freedom: only large effects reach significance.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pymongo.errors
from statsmodels.stats.multitest import multipletests

from analysis import figures
from analysis import masks as mask_analysis
from analysis.query import QueryError, load_runs
from analysis.stats import ComparisonError, compare, one_per_point
from analysis.tables import markdown_table
from experiments import localdb, sweep
from experiments.base import experiment
from ticketlab import dbspec
from ticketlab.cli import Parser
from ticketlab.identity import condition_hash, version_of

DB_NAME = "lottery"
ARCH, DATA = "lenet300_100", "fashion_mnist"
SOURCE_ITERATION_FRACTION = 1 / 3  # iter_final / init_iter score the weights a third into the previous round
START_PERCENT = 30.0  # Q8: heuristic start masks keep 30% of each layer
SIGN_LABELS = {"learned": "test_acc_mean", "random signs": "random_signs_acc_mean",
               "flipped signs": "flipped_signs_acc_mean", "signed constant": "signed_constant_acc_mean"}


@dataclasses.dataclass(frozen=True)
class Part:
    """One sweep of a study: the experiment, sweep flags (grid axes) and config updates for its runs."""

    experiment: str
    flags: tuple[str, ...] = ()
    updates: tuple[str, ...] = ()

    def slug(self) -> str:
        """A readable folder name: ``supermask-start=criterion-start_criterion=large_final+random``."""
        pairs = [value if flag == "--grid" else f"{flag.lstrip('-')}={value}"
                 for flag, value in zip(self.flags[::2], self.flags[1::2])] + list(self.updates)
        short = [f"{key.split('.')[-1]}={value}" for key, _, value in (p.partition("=") for p in pairs)]
        return "-".join([self.experiment, *short]).replace(",", "+")


@dataclasses.dataclass(frozen=True)
class Settings:
    seeds: str = "1,2,3"
    iterations: int = 1500
    rounds: int = 4

    @property
    def source_iteration(self) -> int:
        return max(100, round(self.iterations * SOURCE_ITERATION_FRACTION / 100) * 100)

    def shared(self, experiment: str) -> list[str]:
        updates = [f"data.name={DATA}", f"arch.name={ARCH}", f"training.iterations={self.iterations}",
                   "training.eval_every=100"]
        return updates + ([f"pruning.rounds={self.rounds}"] if experiment == "lottery" else [])

    def caption(self, experiment: str) -> str:
        seeds = self.seeds.split(",")
        what = (f"{self.iterations:,} iterations per round, {self.rounds} pruning rounds" if experiment == "lottery"
                else f"{self.iterations:,} iterations")
        shown = ("mean over seeds with 95% t-band; * = paired t-test over seeds against the baseline at that "
                 "percentage, Holm-corrected p < 0.05" if experiment == "lottery" else
                 "bars: mean over seeds, error bars: std over seeds; tests: paired t over seeds, Holm-corrected")
        return f"{ARCH} on Fashion-MNIST, {what}, {len(seeds)} seeds ({', '.join(seeds)});\n{shown}"


def q9_parts(s: Settings) -> list[Part]:
    # every run carries the same source_iteration (the sources that do not use it ignore it: the same results), so
    # the runs differ only in criterion.source and the report's source_* studies compare them as one setting
    t = f"criterion.source_iteration={s.source_iteration}"
    return [Part("lottery", ("--criteria", "large_final,magnitude_increase,random"),
                 ("criterion.source=init_final", t)),
            Part("lottery", ("--criteria", "large_final,magnitude_increase"), ("criterion.source=init_best", t)),
            # large_final ignores its first state: iter_final would repeat init_final exactly
            Part("lottery", ("--criteria", "magnitude_increase", "--grid", "criterion.source=iter_final,init_iter"),
                 (t,)),
            Part("lottery", ("--criteria", "large_final"), ("criterion.source=init_iter", t))]


def q8_parts(s: Settings) -> list[Part]:
    return [Part("supermask", (), ("supermask.start=scratch",)),
            Part("supermask", ("--grid", "supermask.start_criterion=large_final,random"),
                 ("supermask.start=criterion", f"supermask.start_percent={START_PERCENT}"))]


def scaling_parts(s: Settings) -> list[Part]:
    return [Part("lottery", ("--criteria", "large_final_same_sign", "--grid", "data.preprocess=unit,standardize"),
                 ())]


# the rebuttal's own claims (docs/rebuttal-claims.md): large_final masks, the paper's mask-1/mask-0 actions
SIGN_CRITERIA = ("large_final", "large_final_same_sign", "large_final_diff_sign")
MASK1_ACTIONS = ("original", "reinit", "reshuffle", "constant", "signed_reinit", "signed_reshuffle", "signed_constant",
                 "signed_bimodal")
MASK0_ACTIONS = ("zero", "init", "zero_if_toward_zero", "random_zero")


def lfss_parts(s: Settings) -> list[Part]:
    return [Part("lottery", ("--criteria", ",".join(SIGN_CRITERIA)), ())]


def mask1_parts(s: Settings) -> list[Part]:
    return [Part("lottery", ("--criteria", "large_final", "--mask1", ",".join(MASK1_ACTIONS)), ())]


def mask0_parts(s: Settings) -> list[Part]:
    return [Part("lottery", ("--criteria", "large_final", "--mask0", ",".join(MASK0_ACTIONS)), ())]


# ------------------------------------------------------------------------------------------------ reading runs


def _docs(db, experiment: str, s: Settings, parts: list[Part]) -> list[dict]:
    """The completed runs of ``experiment`` that ``parts`` start at settings ``s`` (their exact conditions, seeds
    ``s.seeds``): runs of other studies or commands in the same database are left out, whatever they share."""
    query = {"experiment.name": experiment, "status": "COMPLETED", "config.data.name": DATA,
             "config.arch.name": ARCH, "config.training.iterations": s.iterations,
             "config.seed": {"$in": [int(x) for x in s.seeds.split(",")]}}
    if experiment == "lottery":
        query["config.pruning.rounds"] = s.rounds
    wanted = part_conditions([p for p in parts if p.experiment == experiment], s)
    docs = db["runs"].find(query, {"config": 1, "info": 1, "status": 1}).sort("_id", 1)
    return [doc for doc in docs if condition_hash(doc["config"]) in wanted]


def _identity(doc: dict) -> dict:
    """The columns that name a run's point (``analysis.stats.POINT``) and the run."""
    return {"run_id": doc["_id"], "condition": condition_hash(doc["config"]), "science": version_of(doc)}


def first_per_point(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with one run per point (the first): a replica of a seed is not a second sample; a line says so."""
    if df.empty:
        return df
    df, notes = one_per_point(df, "first")
    for note in notes:
        print(f"  ({note})")
    return df


def lottery_rows(docs: list[dict], label: Callable[[dict], str | None]) -> pd.DataFrame:
    """One row per (run, round) with the run's ``label`` (runs labelled None are left out)."""
    rows = []
    for doc in docs:
        name = label(doc["config"])
        if name is None:
            continue
        for record in doc["info"].get("rounds", []):
            rows.append({**_identity(doc), "label": name, "seed": doc["config"]["seed"], "arch": ARCH, "data": DATA,
                         "status": doc["status"], "init_hash": record["init_hash"], "round": record["round"],
                         "percent_remaining": record["percent_remaining"], "test_acc": record["test_acc"],
                         "untrained_test_acc": record["untrained_test_acc"]})
    return first_per_point(pd.DataFrame(rows))


def supermask_rows(docs: list[dict]) -> pd.DataFrame:
    rows = []
    for doc in docs:
        cfg, info = doc["config"]["supermask"], doc["info"]
        start = "scratch" if cfg["start"] == "scratch" else f"from {cfg.get('start_criterion')}"
        rows.append({**_identity(doc), "start": start, "seed": doc["config"]["seed"], "arch": ARCH, "data": DATA,
                     "status": doc["status"], "init_hash": info["init_hash"], "round": 0, "percent_remaining": 100.0,
                     **{k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    return first_per_point(pd.DataFrame(rows))


# ------------------------------------------------------------------------------------------------ reports


def _table(df: pd.DataFrame, factor: str, baseline: str, metric: str) -> pd.DataFrame | None:
    try:
        return compare(df, factor, baseline, metric)
    except ComparisonError as error:
        print(f"  ({factor} vs {baseline}, {metric}: {error})")
        return None


def _tests_md(table: pd.DataFrame | None, drop_percent: bool = False) -> str:
    if table is None:
        return "(no comparison possible: too few completed runs)\n"
    cols = ["percent_remaining", "condition", "baseline", "n", "mean", "std", "mean_baseline", "diff", "ci_low",
            "ci_high", "t", "p", "p_holm", "significant"]
    cols = [c for c in cols if c in table and not (drop_percent and c == "percent_remaining")]
    return markdown_table(table[cols])


def q9_report(db, s: Settings, out: Path) -> list[str]:
    def label(cfg):
        c = cfg["criterion"]
        if c["name"] == "random":
            return "random" if c["source"] == "init_final" else None
        return c["source"] if c["name"] in ("large_final", "magnitude_increase") else None

    lines = ["# Q9: masks from other points of the trajectory (criterion.source)\n",
             f"A criterion scores two weight states of the previous round: init_final (the paper's), init_best "
             f"(best = minimum validation loss), iter_final and init_iter (iter = after {s.source_iteration} of "
             f"{s.iterations} steps). Baseline: init_final of the same criterion; random for reference. "
             f"(large_final with iter_final equals init_final: not run.)\n"]
    for criterion in ("large_final", "magnitude_increase"):
        docs = [d for d in _docs(db, "lottery", s, q9_parts(s))
                if d["config"]["criterion"]["name"] in (criterion, "random")]
        df = lottery_rows(docs, label)
        if df.empty or "init_final" not in set(df["label"]):
            lines.append(f"## {criterion}\n\n(no completed runs yet)\n")
            continue
        table = _table(df, "label", "init_final", "test_acc")
        paths = figures.save(figures.study_figure(df, "label", "init_final", "test_acc",
                                                  f"Q9: mask source of {criterion}, test accuracy at early stopping\n"
                                                  f"{s.iterations:,} iterations per round, {s.rounds} rounds",
                                                  "test accuracy", table), out, f"q9_{criterion}")
        lines += [f"## {criterion}\n", f"![{criterion}]({paths[0].name})\n",
                  f"*{s.caption('lottery')}.*\n".replace(";\n", "; "), _tests_md(table)]
        (out / f"q9_{criterion}.csv").write_text(df.to_csv(index=False))
    return lines


def _bars(df: pd.DataFrame, factor: str, metrics: dict[str, str], title: str, caption: str, out: Path, stem: str,
          chance: float | None = None) -> Path:
    """Grouped bars: one group per ``factor`` value, one bar per metric (mean over seeds, error bar = std)."""
    import matplotlib.pyplot as plt
    import numpy as np

    groups = sorted(df[factor].unique(), key=lambda g: (g != "scratch", g))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / len(metrics)
    for i, (name, column) in enumerate(metrics.items()):
        stats = df.groupby(factor)[column].agg(["mean", "std"]).reindex(groups)
        ax.bar(np.arange(len(groups)) + i * width, stats["mean"], width, yerr=stats["std"].fillna(0), label=name,
               color=figures.color(name), capsize=3)
    if chance is not None:
        ax.axhline(chance, color="black", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(np.arange(len(groups)) + width * (len(metrics) - 1) / 2, groups)
    ax.set_title(f"{title}\n{caption}", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.25)
    return figures.save(fig, out, stem)[0]


def q8_report(db, s: Settings, out: Path) -> list[str]:
    df = supermask_rows(_docs(db, "supermask", s, q8_parts(s)))
    lines = ["# Q8: Supermasks started from a heuristic mask (supermask.start)\n",
             f"Scores start at logit(0.9) where a start mask keeps a weight and logit(0.1) where it prunes it; the "
             f"start masks keep {START_PERCENT:g}% of each layer by large_final or at random (large_final scored on "
             f"the dense net of the same seed trained {s.iterations:,} steps). Baseline: from scratch (p = 0.5). "
             f"Distances: Hamming distance between the start mask and the learned expected mask (p > 0.5) at the "
             f"early-stopping point, as a fraction of all weights.\n"]
    if df.empty or "scratch" not in set(df["start"]):
        return lines + ["(no completed runs yet)\n"]
    caption = s.caption("supermask")
    summary = df.groupby("start")[["test_acc_mean", "expected_density", "start_hamming_fraction",
                                   "start_dropped_fraction", "start_added_fraction"]].agg(["mean", "std"])
    summary.columns = [f"{a} {b}" for a, b in summary.columns]
    table = _table(df, "start", "scratch", "test_acc_mean")
    path = _bars(df, "start", {"test accuracy": "test_acc_mean", "expected density": "expected_density"},
                 "Q8: learned Supermask by start", caption, out, "q8_start")
    moved = _bars(df[df["start"] != "scratch"], "start",
                  {"Hamming fraction": "start_hamming_fraction", "start-kept dropped": "start_dropped_fraction",
                   "start-pruned taken up": "start_added_fraction"}, "Q8: how far the learned mask moved from its "
                  "start", caption, out, "q8_moved")
    (out / "q8_runs.csv").write_text(df.to_csv(index=False))
    return lines + [f"![q8]({path.name})\n", f"![moved]({moved.name})\n", f"*{caption}.*\n".replace(";\n", "; "),
                    markdown_table(summary.reset_index()), "\nPaired tests of test accuracy against scratch:\n\n",
                    _tests_md(table, drop_percent=True)]


def q7_report(db, s: Settings, out: Path) -> list[str]:
    df = supermask_rows(_docs(db, "supermask", s, q8_parts(s)))
    lines = ["# Q7: sign randomisation of learned Supermasks\n",
             "Each learned Supermask (the Q8 runs) evaluated at its early-stopping point over the same weights with "
             "their signs: kept (learned), random (magnitudes kept, 5 sign draws), all flipped, and signed "
             "constants (std * sign, signs kept); each over 10 mask samples. Baseline: learned.\n"]
    if df.empty or "random_signs_acc_mean" not in df:
        return lines + ["(no completed runs yet)\n"]
    long = pd.concat([df.assign(variant=name, acc=df[column]) for name, column in SIGN_LABELS.items()])
    caption = s.caption("supermask")
    path = _bars(df, "start", SIGN_LABELS, "Q7: test accuracy of learned Supermasks with changed signs", caption,
                 out, "q7_signs", chance=0.1)
    lines += [f"![q7]({path.name})\n", f"*{caption}; dotted line: chance (0.1).*\n".replace(";\n", "; ")]
    for start, group in long.groupby("start"):
        table = _table(group, "variant", "learned", "acc")
        lines += [f"\n## start: {start}\n", _tests_md(table, drop_percent=True)]
    stats = long.groupby(["start", "variant"])["acc"].agg(["mean", "std", "count"]).reset_index()
    (out / "q7_runs.csv").write_text(long.to_csv(index=False))
    return lines + ["\nAll runs:\n\n", markdown_table(stats)]


def scaling_report(db, s: Settings, out: Path) -> list[str]:
    docs = [d for d in _docs(db, "lottery", s, scaling_parts(s))
            if d["config"]["criterion"]["name"] == "large_final_same_sign"
            and d["config"]["treatment"]["mask1"] == "original" and d["config"]["treatment"]["mask0"] == "zero"]
    df = lottery_rows(docs, lambda cfg: cfg["data"].get("preprocess", "unit"))
    lines = ["# Input scaling: the untrained large_final_same_sign Supermask by data.preprocess\n",
             "unit: pixels / 255 in [0, 1] (the paper's); standardize: then minus the training set's mean and "
             "divided by its std. Baseline: unit.\n"]
    if df.empty or df["label"].nunique() < 2:
        return lines + ["(no completed runs yet)\n"]
    for metric, title in (("untrained_test_acc", "untrained test accuracy"), ("test_acc", "test accuracy")):
        table = _table(df, "label", "unit", metric)
        paths = figures.save(figures.study_figure(df, "label", "unit", metric, f"Input scaling: {title} of "
                                                  f"large_final_same_sign masks\n{s.iterations:,} iterations per "
                                                  f"round, {s.rounds} rounds", title, table), out, f"scaling_{metric}")
        lines += [f"## {title}\n", f"![{metric}]({paths[0].name})\n",
                  f"*{s.caption('lottery')}.*\n".replace(";\n", "; "), _tests_md(table)]
    (out / "scaling_runs.csv").write_text(df.to_csv(index=False))
    return lines


# ------------------------------------------------------------------------------------------------ the rebuttal's claims


def part_conditions(parts: list[Part], s: Settings) -> set[str]:
    """The conditions (``ticketlab.identity.condition_hash``) of every run ``parts`` start, resolved as the sweep
    resolves them."""
    out = set()
    for part in parts:
        args, parser = sweep.parse_args(["-m", "h:1:db", "--experiment", part.experiment, *part.flags, "--seeds",
                                         s.seeds.split(",")[0], "with", *s.shared(part.experiment), *part.updates])
        out |= {condition_hash(sweep.resolve(experiment(part.experiment), args.shared + point))
                for point in sweep.grid_points(sweep.build_axes(args, parser))}
    return out


def claim_runs(db, s: Settings, parts: list[Part]) -> tuple[str, pd.DataFrame]:
    """(the database's ``-m`` spec, one row per (completed run, round) of the runs ``parts`` start, seeds
    ``s.seeds``): the frame of ``analysis.load_runs``, other studies' runs in the same database left out."""
    host, port = db.client.address
    spec = f"{host}:{port}:{db.name}"
    frame = load_runs(spec, where={"seed": [int(x) for x in s.seeds.split(",")]})
    if frame.empty:
        return spec, frame
    wanted = part_conditions(parts, s)
    ids = [int(r) for r in frame["run_id"].unique()]
    conditions = {doc["_id"]: condition_hash(doc["config"])
                  for doc in db["runs"].find({"_id": {"$in": ids}}, {"config": 1})}
    return spec, frame[frame["run_id"].map(conditions).isin(wanted) & (frame["status"] == "COMPLETED")]


def outcome(table: pd.DataFrame | None, condition: str, sign: int) -> tuple[str, str]:
    """(held | did not hold | cannot be told at these settings, the numbers) for the claim that ``condition``
    differs from the table's baseline in direction ``sign`` (+1 above, -1 below): held when it does, significantly
    (Holm), at one percentage or more and significantly the other way at none."""
    rows = None if table is None else table[table["condition"] == condition]
    if rows is None or rows.empty:
        return "cannot be told at these settings", f"{condition}: no comparison (too few completed runs)"
    direction = np.sign(rows["diff"]) == sign
    support, against = rows[direction & rows["significant"]], rows[~direction & rows["significant"]]
    verdict = "did not hold" if len(against) else "held" if len(support) else "cannot be told at these settings"
    sparsest = rows.loc[rows["percent_remaining"].idxmin()]
    text = (f"{condition} - {sparsest['baseline']}: {'above' if sign > 0 else 'below'} at {int(direction.sum())} "
            f"of {len(rows)} percentages, diff {rows['diff'].min():+.4f} to {rows['diff'].max():+.4f}; significant "
            f"(paired t, Holm p < 0.05) in the claimed direction at {len(support)}"
            + (f" ({', '.join(f'{p:.3g}%' for p in support['percent_remaining'])})" if len(support) else "")
            + f", against it at {len(against)}"
            + (f" ({', '.join(f'{p:.3g}%' for p in against['percent_remaining'])})" if len(against) else "")
            + f"; at {sparsest['percent_remaining']:.3g}% remaining {sparsest['mean']:.4f} vs "
            f"{sparsest['mean_baseline']:.4f} (diff {sparsest['diff']:+.4f}, 95% CI [{sparsest['ci_low']:+.4f}, "
            f"{sparsest['ci_high']:+.4f}], p_holm={sparsest['p_holm']:.3g})")
    return verdict, text


def _study(df: pd.DataFrame, name: str, out: Path, s: Settings) -> tuple[pd.DataFrame | None, list[str]]:
    """A study of ``ticketlab.schema.STUDIES`` on ``df``: its figure saved in ``out``, its lines and its table."""
    try:
        fig, table = figures.study(df, name)
    except ComparisonError as error:
        return None, [f"({name}: {error})\n"]
    if fig is None:
        return None, [f"({name}: no completed runs yet)\n"]
    path = figures.save(fig, out, name)[0]
    return table, [f"![{name}]({path.name})\n", f"*{s.caption('lottery')}.*\n".replace(";\n", "; "),
                   _tests_md(table)]


def _claim(db, s: Settings, parts: list[Part], out: Path, header: list[str], study: str):
    """(spec, runs, the study's table, the report's lines so far) of a claim whose runs ``parts`` start; runs is
    empty (and the lines say so) before any completed."""
    spec, df = claim_runs(db, s, parts)
    if df.empty:
        return spec, df, None, header + ["(no completed runs yet)\n"]
    table, lines = _study(df, study, out, s)
    return spec, df, table, header + lines


def _mask_store(spec: str, df: pd.DataFrame):
    try:
        return mask_analysis.load(spec, runs=df)
    except QueryError as error:
        print(f"  ({error})")
        return None


def _figure_line(fig, out: Path, stem: str) -> str:
    return f"![{stem}]({figures.save(fig, out, stem)[0].name})\n"


def lfss_report(db, s: Settings, out: Path) -> list[str]:
    spec, df, table, lines = _claim(db, s, lfss_parts(s), out, [
             "# Rebuttal 3: the sign criteria trained iteratively\n",
             "Claim: large_final_same_sign slightly underperforms large_final when trained in the iterative pruning "
             "paradigm, because of random tie-breaking when the criterion has too few ones (weights that kept their "
             "sign). Study `lfss_trained`: large_final (baseline), large_final_same_sign, large_final_diff_sign, "
             "mask-1 original, mask-0 zero. Each round records how many kept weights tie-breaking chose "
             "(`tie_breaks`).\n"], "lfss_trained")
    if df.empty:
        return lines
    store = _mask_store(spec, df)
    if store is not None:
        ties = mask_analysis.tie_breaks(df, store)
        by_round = ties.groupby(["label", "round", "layer"]).agg(
            percent_remaining=("percent_remaining", "first"), kept=("kept", "mean"),
            tie_broken=("tie_broken", "mean"), fraction=("tie_broken_fraction", "mean")).reset_index()
        wide = by_round.assign(cell=[f"{t:.0f} ({100 * f:.1f}%)" for t, f in zip(by_round["tie_broken"],
                                                                                   by_round["fraction"])])
        wide = wide.pivot_table(index=["label", "round", "percent_remaining"], columns="layer", values="cell",
                                aggfunc="first").reset_index()
        lines += ["## Tie-breaking\n", "Kept weights chosen by random tie-breaking, mean over seeds (percent of the "
                  "layer's kept weights):\n", markdown_table(wide),
                  _figure_line(mask_analysis.layer_figure(ties, "tie_broken_fraction", "tie-broken / kept",
                                                          "Kept weights chosen by tie-breaking (symmetric log "
                                                          "scale, linear below 0.001)", linthresh=1e-3), out,
                               "lfss_ties"),
                  "## What the masks are\n", "Sign flips: kept weights whose final sign differs from their initial "
                  "sign (the weights large_final_diff_sign wants, and the shortfall of large_final_same_sign):\n",
                  _figure_line(mask_analysis.flips_figure(store.flips, store.runs), out, "lfss_flips")]
        for kind in ("criterion", "seed", "round"):
            pairs = mask_analysis.overlaps(store, kind)
            if not pairs.empty:
                lines.append(_figure_line(mask_analysis.overlap_figure(pairs), out, f"lfss_overlap_{kind}"))
                pairs.to_csv(out / f"lfss_overlap_{kind}.csv", index=False)
        ties.to_csv(out / "lfss_tie_breaks.csv", index=False)
        lfss = by_round[by_round["label"] == "large_final_same_sign"]
        most = lfss.loc[lfss["fraction"].idxmax()] if not lfss.empty else None
    else:
        most = None
    verdict, numbers = outcome(table, "large_final_same_sign", -1)
    explanation = ("no tie-break data" if most is None else
                   f"tie-breaking chose at most {100 * most['fraction']:.2f}% of large_final_same_sign's kept weights "
                   f"of a layer ({most['layer']}, round {most['round']}, mean {most['tie_broken']:.0f} of "
                   f"{most['kept']:.0f})")
    lines += ["## Outcome\n", f"- Claim (large_final_same_sign below large_final): **{verdict}**. {numbers}.",
              f"- Explanation (tie-breaking): {explanation}.",
              "- Claim (large_final_diff_sign below large_final): **{}**. {}.\n".format(
                  *outcome(table, "large_final_diff_sign", -1))]
    df.to_csv(out / "lfss_runs.csv", index=False)
    return lines


def bimodal_report(db, s: Settings, out: Path) -> list[str]:
    spec, df, table, lines = _claim(db, s, mask1_parts(s), out, [
             "# Rebuttal 6: bimodal start values\n",
             "Claim: signed_reinit underperforms signed_reshuffle and signed_constant, hypothesised because the "
             "latter two are bimodal (their magnitudes stay away from zero). Control: signed_bimodal, a fresh draw "
             "with the signs kept whose magnitudes cluster at 0.97 std (spread 0.25 std), the mean square of "
             "signed_reinit. Study `bimodal` (baseline signed_reinit); study `mask1`: every mask-1 action vs "
             "original. large_final masks, mask-0 zero.\n"], "bimodal")
    if df.empty:
        return lines
    _, all_lines = _study(df, "mask1", out, s)
    lines += ["## Every mask-1 action vs original\n", *all_lines]
    start_values = _start_values_figure(spec, df)
    if start_values is not None:
        lines += ["## Start values\n", "The start values of the kept weights of the first layer in round 1 and in "
                  "the last round (first seed; the run's own mask and draws):\n",
                  _figure_line(start_values, out, "bimodal_start")]
    claims = {"signed_reshuffle": "", "signed_constant": "", "signed_bimodal": " (the hypothesis: bimodal is enough)"}
    lines += ["## Outcome\n", *[f"- {name} above signed_reinit{why}: **{verdict}**. {numbers}." for name, why in
                                claims.items() for verdict, numbers in [outcome(table, name, +1)]], ""]
    df.to_csv(out / "mask1_runs.csv", index=False)
    return lines


def _start_values_figure(spec: str, df: pd.DataFrame):
    """Histograms of the start values of the first layer's kept weights in round 1 (one mask for every action: the
    dense round's) and in the last round (each run's own mask), per signed mask-1 action and original, first seed:
    recomputed from the stored mask and initial weights with the run's own treatment stream (the first layer takes
    the stream's first draws), in units of the std of the layer's initial weights."""
    import matplotlib.pyplot as plt

    from masking import rng, treatments

    seed, last = int(df["seed"].min()), int(df["round"].max())
    names = ["original", "signed_reinit", "signed_reshuffle", "signed_constant", "signed_bimodal"]
    runs = df[(df["seed"] == seed) & (df["round"] == last) & df["mask1"].isin(names)]
    if runs.empty or last < 1:
        return None
    runs = runs.sort_values("mask1", key=lambda c: c.map(names.index)).to_dict("records")
    fig, axes = plt.subplots(2, len(runs), figsize=(3 * len(runs), 5.6), sharex=True, squeeze=False)
    percent = {k: float(df[df["round"] == k]["percent_remaining"].iloc[0]) for k in (1, last)}
    for column, row in enumerate(runs):
        init = mask_analysis.artifact(spec, None, row["run_id"], "init.pt")
        for line, k in enumerate((1, last)):
            masks = mask_analysis.artifact(spec, None, row["run_id"], f"round_{k:02d}.pt")["mask"]
            layer = sorted(masks)[0]
            start = treatments.mask1(row["mask1"], init[layer], masks[layer],
                                     rng.stream(seed, "treatment", k))[masks[layer]]
            std = float(init[layer].std())
            ax = axes[line][column]
            ax.hist((start / std).numpy(), bins=80, range=(-3.5, 3.5), color=figures.color(row["mask1"]))
            ax.set_title(f"{row['mask1']}, round {k} ({percent[k]:.3g}%)", fontsize=8)
            ax.set_yticks([])
            near = float((start.abs() < std / 4).float().mean())
            ax.text(0.02, 0.97, f"|v| < std/4: {100 * near:.1f}%", transform=ax.transAxes, fontsize=7, va="top")
        axes[1][column].set_xlabel("start value / std of the layer's init")
    fig.suptitle(f"Start values of the kept weights of {layer}, seed {seed} (round 1: one mask for all; round "
                 f"{last}: each run's own)", fontsize=10)
    return fig


def quadrant_report(db, s: Settings, out: Path) -> list[str]:
    spec, df = claim_runs(db, s, mask1_parts(s))
    lines = ["# Rebuttal 2: anywhere in the correct weight quadrant optimizes well\n",
             "Each sign-dropping mask-1 action against its sign-keeping twin (reinit / signed_reinit, reshuffle / "
             "signed_reshuffle, constant / signed_constant) at every pruning percentage: studies quadrant_reinit, "
             "quadrant_reshuffle, quadrant_constant (the sign-dropped action is the baseline); large_final masks, "
             "mask-0 zero. p_holm below: Holm across the three pairs at one percentage.\n"]
    if df.empty:
        return lines + ["(no completed runs yet)\n"]
    tables = []
    for name in ("reinit", "reshuffle", "constant"):
        try:
            _, table = figures.study(df, f"quadrant_{name}")
        except ComparisonError as error:
            lines.append(f"(quadrant_{name}: {error})\n")
            continue
        if table is not None:
            tables.append(table.drop(columns=["p_holm", "significant"], errors="ignore"))
    if not tables:
        return lines + ["(no comparison possible: too few completed runs)\n"]
    table = pd.concat(tables, ignore_index=True)
    table["p_holm"] = table.groupby("percent_remaining")["p"].transform(
        lambda p: multipletests(p, alpha=0.05, method="holm")[1])
    table["significant"] = table["p_holm"] < 0.05
    table = table.sort_values(["percent_remaining", "baseline"], ascending=[False, True]).reset_index(drop=True)
    pairs = df[df["mask1"].isin([n for b in ("reinit", "reshuffle", "constant") for n in (b, f"signed_{b}")])]
    styles = {f"{prefix}{name}": {"color": color, "linestyle": "-" if prefix else "--", "linewidth": 1.6}
              for name, color in zip(("reinit", "reshuffle", "constant"), ("tab:blue", "tab:orange", "tab:green"))
              for prefix in ("", "signed_")}
    fig = figures.study_figure(pairs, "mask1", None, "test_acc", "Rebuttal 2: sign kept (signed_*, solid) vs sign "
                               "dropped (dashed), large_final masks, test accuracy at early stopping",
                               "test accuracy", table, styles)
    wins = table[table["diff"] > 0]
    significant = table[table["significant"]]
    sparsest = table[table["percent_remaining"] == table["percent_remaining"].min()]
    verdict = ("did not hold" if (significant["diff"] < 0).any() else "held" if len(significant) else
               "cannot be told at these settings")
    sentence = (f"Keeping the initial signs (signed_X vs X) gave the higher mean test accuracy in {len(wins)} of "
                f"{len(table)} comparisons ({table['condition'].nunique()} pairs, {table['percent_remaining'].nunique()} "
                f"percentages; diff "
                f"{table['diff'].min():+.4f} to {table['diff'].max():+.4f}), significantly (paired t, Holm across the "
                f"pairs) in {int((significant['diff'] > 0).sum())} and significantly lower in "
                f"{int((significant['diff'] < 0).sum())}; at {sparsest['percent_remaining'].iloc[0]:.3g}% remaining: "
                + ", ".join(f"{r.condition} - {r.baseline} {r.diff:+.4f} (p_holm={r.p_holm:.3g})"
                            for r in sparsest.itertuples(index=False)))
    lines += [_figure_line(fig, out, "quadrant"), f"*{s.caption('lottery')}.*\n".replace(";\n", "; "),
              _tests_md(table), "## Outcome\n", f"- Quadrant claim: **{verdict}**. {sentence}.\n"]
    table.to_csv(out / "quadrant_tests.csv", index=False)
    return lines


def mask0_report(db, s: Settings, out: Path) -> list[str]:
    spec, df, table, lines = _claim(db, s, mask0_parts(s), out, [
             "# Rebuttal 2 and 5: masking as training predicts the mask-0 actions\n",
             "Prediction: a mask-0 action helps as far as it moves the pruned weights the way training was moving "
             "them. Over the pruned weights (v: the value the action froze them at, read from the run's final "
             "weights; d: their value at the end of the last round they trained in; w_i: initial): alignment = "
             "sum (v - w_i)(d - w_i) / sum (d - w_i)^2, the part of training's move the action repeats (0 for "
             "init); distance = sum (v - d)^2 / sum (d - w_i)^2 (1 for init). Predicted order: highest alignment "
             "(smallest distance) first; measured order: highest test accuracy at early stopping first (means over "
             "seeds). Study `mask0`: every action vs zero, large_final masks, mask-1 original.\n"], "mask0")
    if df.empty:
        return lines
    store = _mask_store(spec, df)
    if store is None:
        return lines
    prediction = mask_analysis.mask0_prediction(store)
    orders = {name: mask_analysis.mask0_order(prediction, df, predictor=name) for name in mask_analysis.PREDICTORS}
    summary = prediction.groupby(["mask0", "round"]).agg(
        percent_remaining=("percent_remaining", "mean"), alignment=("alignment", "mean"),
        distance=("distance", "mean"), zeroed=("zeroed_fraction", "mean"),
        toward_zero=("toward_zero_fraction", "mean")).reset_index()
    lines += ["## Predicted vs measured order\n"]
    outcomes = []
    for name, order in orders.items():
        same = int((order["predicted"] == order["measured"]).sum())
        lines += [f"By {name}:\n", markdown_table(order)]
        outcomes.append(f"- By {name}: predicted and measured order the same at {same} of {len(order)} percentages; "
                        f"Kendall tau {order['kendall_tau'].min():+.2f} to {order['kendall_tau'].max():+.2f} "
                        f"(mean {order['kendall_tau'].mean():+.2f}; 1: the same order); at "
                        f"{order['percent_remaining'].iloc[-1]:.3g}% remaining predicted "
                        f"{order['predicted'].iloc[-1]}, measured {order['measured'].iloc[-1]}.")
    # each action against zero, in the direction its alignment predicts (mean over rounds and seeds)
    alignment = prediction.groupby("mask0")["alignment"].mean()
    for name in ("init", "zero_if_toward_zero", "random_zero"):
        if name in alignment and "zero" in alignment:
            sign = 1 if alignment[name] > alignment["zero"] else -1
            verdict, numbers = outcome(table, name, sign)
            outcomes.append(f"- {name} predicted {'above' if sign > 0 else 'below'} zero (alignment "
                            f"{alignment[name]:+.3f} vs {alignment['zero']:+.3f}): **{verdict}**. {numbers}.")
    lines += ["\nPredictors (mean over seeds; zeroed: pruned weights frozen at 0; toward_zero: pruned weights "
              "training moved toward zero):\n", markdown_table(summary),
              _figure_line(mask_analysis.mask0_figure(prediction, df), out, "mask0_prediction"),
              "## Outcome\n", *outcomes, ""]
    prediction.to_csv(out / "mask0_prediction.csv", index=False)
    return lines


@dataclasses.dataclass(frozen=True)
class Question:
    parts: Callable[[Settings], list[Part]]
    report: Callable[..., list[str]]


STUDIES = {"q9": Question(q9_parts, q9_report), "q8": Question(q8_parts, q8_report),
           "q7": Question(q8_parts, q7_report), "scaling": Question(scaling_parts, scaling_report),
           "lfss": Question(lfss_parts, lfss_report), "bimodal": Question(mask1_parts, bimodal_report),
           "quadrant": Question(mask1_parts, quadrant_report), "mask0": Question(mask0_parts, mask0_report)}
GROUPS = {"all": list(STUDIES), "claims": ["lfss", "bimodal", "quadrant", "mask0"]}


def run_parts(parts: list[Part], spec: str, s: Settings, workers: int, logs: Path) -> int:
    code = 0
    for part in parts:
        folder = logs / part.slug()
        args = ["-m", spec, "--experiment", part.experiment, *part.flags, "--seeds", s.seeds, "--workers",
                str(workers), "--logs", str(folder), "with", *s.shared(part.experiment), *part.updates]
        code = sweep.main(args) or code
    return code


def main(argv=None) -> int:
    parser = Parser(prog="python -m experiments.questions", description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=[*STUDIES, *GROUPS])
    parser.add_argument("--home", default=None, help="folder for the database, logs and reports "
                                                     "(default $TICKETLAB_HOME or ~/.ticketlab)")
    parser.add_argument("--port", type=int, default=localdb.DEFAULT_PORT, help="port of the local database")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--iterations", type=int, default=1500, help="training steps per round (and Supermask)")
    parser.add_argument("--rounds", type=int, default=4, help="pruning rounds of the lottery studies")
    parser.add_argument("--report-only", action="store_true", help="write the reports of the runs there are")
    args = parser.parse_args(argv)
    settings = Settings(args.seeds, args.iterations, args.rounds)
    names = GROUPS.get(args.study, [args.study])
    home = localdb.home_dir(args.home)
    started = time.monotonic()
    address = localdb.running_or_say(home, args.port)
    if address is None:
        return 1
    spec = f"{address}:{DB_NAME}"
    print(f"questions: run database at {address} (data in {home / 'db'})")
    code = 0
    if not args.report_only:
        done = set()
        for name in names:
            parts = [p for p in STUDIES[name].parts(settings) if p not in done]
            code = run_parts(parts, spec, settings, args.workers, home / "questions_logs" / name) or code
            done.update(parts)
    client = dbspec.connect(f"mongodb://{address}")
    try:
        for name in names:
            out = home / "questions" / name
            out.mkdir(parents=True, exist_ok=True)
            lines = STUDIES[name].report(client[DB_NAME], settings, out)
            (out / "report.md").write_text("\n".join(lines) + "\n")
            print(f"questions: {name} report in {out / 'report.md'}")
    except (pymongo.errors.PyMongoError, QueryError) as error:
        why = error if isinstance(error, QueryError) else f"the run database at {address} stopped answering " \
                                                           f"({type(error).__name__})"
        print(f"error: no reports: {why}; what completed is stored: run the same command again when the database "
              f"answers (it retrains nothing done)", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"questions: done after {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
