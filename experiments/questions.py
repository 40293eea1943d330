"""The rebuttal's open questions as studies: run them and write their figures, tables and paired tests, one command.

    python -m experiments.questions q9        # masks from other points of the trajectory (criterion.source)
    python -m experiments.questions q8        # Supermasks started from a heuristic mask (supermask.start)
    python -m experiments.questions q7        # sign randomisation of learned Supermasks (the q8 runs)
    python -m experiments.questions scaling   # input scaling (data.preprocess) in the untrained-Supermask study
    python -m experiments.questions all [--home DIR] [--port P] [--workers 2] [--seeds 1,2,3] [--iterations 1500]
                                        [--rounds 4] [--report-only]

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

import pandas as pd

from analysis import figures
from analysis.report import markdown_table
from analysis.stats import ComparisonError, compare
from experiments import dbspec, localdb, sweep
from ticketlab.cli import Parser

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


# ------------------------------------------------------------------------------------------------ reading runs


def _docs(db, experiment: str, s: Settings) -> list[dict]:
    query = {"experiment.name": experiment, "status": "COMPLETED", "config.data.name": DATA,
             "config.arch.name": ARCH, "config.training.iterations": s.iterations,
             "config.seed": {"$in": [int(x) for x in s.seeds.split(",")]}}
    if experiment == "lottery":
        query["config.pruning.rounds"] = s.rounds
    return list(db["runs"].find(query, {"config": 1, "info": 1, "status": 1}))


def lottery_rows(docs: list[dict], label: Callable[[dict], str | None]) -> pd.DataFrame:
    """One row per (run, round) with the run's ``label`` (runs labelled None are left out)."""
    rows = []
    for doc in docs:
        name = label(doc["config"])
        if name is None:
            continue
        for record in doc["info"].get("rounds", []):
            rows.append({"label": name, "seed": doc["config"]["seed"], "arch": ARCH, "data": DATA,
                         "status": doc["status"], "init_hash": record["init_hash"], "round": record["round"],
                         "percent_remaining": record["percent_remaining"], "test_acc": record["test_acc"],
                         "untrained_test_acc": record["untrained_test_acc"]})
    return pd.DataFrame(rows)


def supermask_rows(docs: list[dict]) -> pd.DataFrame:
    rows = []
    for doc in docs:
        cfg, info = doc["config"]["supermask"], doc["info"]
        start = "scratch" if cfg["start"] == "scratch" else f"from {cfg.get('start_criterion')}"
        rows.append({"start": start, "seed": doc["config"]["seed"], "arch": ARCH, "data": DATA,
                     "status": doc["status"], "init_hash": info["init_hash"], "round": 0, "percent_remaining": 100.0,
                     **{k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    return pd.DataFrame(rows)


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
        docs = [d for d in _docs(db, "lottery", s) if d["config"]["criterion"]["name"] in (criterion, "random")]
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
    df = supermask_rows(_docs(db, "supermask", s))
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
    df = supermask_rows(_docs(db, "supermask", s))
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
    docs = [d for d in _docs(db, "lottery", s) if d["config"]["criterion"]["name"] == "large_final_same_sign"
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


@dataclasses.dataclass(frozen=True)
class Question:
    parts: Callable[[Settings], list[Part]]
    report: Callable[..., list[str]]


STUDIES = {"q9": Question(q9_parts, q9_report), "q8": Question(q8_parts, q8_report),
           "q7": Question(q8_parts, q7_report), "scaling": Question(scaling_parts, scaling_report)}


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
    parser.add_argument("study", choices=[*STUDIES, "all"])
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
    names = list(STUDIES) if args.study == "all" else [args.study]
    home = localdb.home_dir(args.home)
    started = time.monotonic()
    address = localdb.ensure_running(home, args.port)
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
    finally:
        client.close()
    print(f"questions: done after {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
