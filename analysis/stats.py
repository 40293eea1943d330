"""Per-percentage comparisons across seeds: the rebuttal's rule, one test per pruning percentage.

``compare(df, factor="criterion", baseline="random", metric="test_acc")`` tests, at every percent of weights
remaining and for every condition of ``factor``, the condition's runs against the baseline's. Nothing is pooled
across percentages (iterative pruning correlates them).

The experimental unit is the seed (``ticketlab.identity``: a *point* is one seed of one condition, made by one
science version). So:

* **Pairs where pairs exist.** A condition is compared with the baseline on the seeds both hold with the same
  initial weights (``init_hash``): a paired t-test on the per-seed differences. Runs of a seed only one side holds
  are left out, and listed (``result.attrs["unpaired"]``, warned about): one extra seed never turns a paired study
  into an unpaired one. ``paired=False`` asks for Welch's unequal-variance t-test over all runs instead (its
  ``test`` column says so).
* **Replicas are not samples.** Two runs of one point (a rerun, a population member beside a single run, a CPU run
  beside a GPU run) are replicas: ``compare`` refuses them in one line naming the points and their runs unless
  ``replicas`` says which to use: ``first`` or ``last`` (by run id) or ``mean`` (their mean, one sample).
  ``one_per_point`` does that for any frame (the figures and the report use it).
* **Code changes are settings.** Runs of two science versions (``science`` column) differ in a condition column:
  refused like any other difference (``check_comparable``); the report compares each setting apart.

statsmodels does the arithmetic; Holm's correction runs across the conditions of one percentage.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from analysis.conditions import differences, refusal

PERCENT_DECIMALS = 6  # percent_remaining is grouped at this precision
COLUMNS = ["percent_remaining", "round", "condition", "baseline", "test", "n", "mean", "std", "n_baseline",
           "mean_baseline", "std_baseline", "diff", "ci_low", "ci_high", "t", "df", "p", "p_holm", "significant"]
REPLICAS = ("refuse", "first", "last", "mean")  # what to do with two runs of one point
POINT = ["condition", "seed", "science"]  # the columns that name a point (those present)


class ComparisonError(ValueError):
    """The runs cannot be compared as asked; the message says why and what to do."""


def check_comparable(df: pd.DataFrame, factor: str) -> None:
    """Raise unless the runs differ only in ``factor``, the seed and execution keys: every other config value
    (``analysis.conditions``) and the science version are one value across the runs. Nothing is ever pooled."""
    diff = differences(df, factor)
    if diff:
        raise ComparisonError(refusal(diff, factor))


def replica_groups(df: pd.DataFrame) -> list[list[int]]:
    """The run ids of each point that more than one run holds (sorted), from a frame of runs."""
    keys = [c for c in POINT if c in df]
    runs = df.drop_duplicates("run_id")[[*keys, "run_id"]]
    groups = runs.groupby(keys, dropna=False)["run_id"].apply(lambda ids: sorted(map(int, ids)))
    return [ids for ids in groups if len(ids) > 1]


def one_per_point(df: pd.DataFrame, replicas: str = "refuse") -> tuple[pd.DataFrame, list[str]]:
    """The frame with one run per point, and a note on the replicas met (empty when there were none).

    ``replicas``: ``refuse`` (a ComparisonError naming the points and runs), ``first`` / ``last`` (the run with
    the lowest / highest id of each point), ``mean`` (the mean of each numeric column over the point's runs, per
    round; the other columns are the first run's)."""
    if replicas not in REPLICAS:
        raise ComparisonError(f"replicas={replicas!r} is not valid; valid choices: {', '.join(REPLICAS)}")
    groups = replica_groups(df) if "run_id" in df and not df.empty else []
    if not groups:
        return df, []
    shown = "; ".join(_describe_point(df, ids) for ids in groups[:3]) + (" ..." if len(groups) > 3 else "")
    if replicas == "refuse":
        raise ComparisonError(f"{len(groups)} point(s) have replicas, runs of one seed of one condition that are "
                              f"not separate samples ({shown}); choose one run per point with replicas='first', "
                              f"'last' or 'mean' (command line: --replicas first)")
    extra = sum(len(ids) - 1 for ids in groups)
    note = (f"{extra} replica run(s) of {len(groups)} point(s) seen ({shown}); each point counts once: "
            + {"first": "its first run", "last": "its last run", "mean": "the mean of its runs"}[replicas])
    if replicas in ("first", "last"):
        keep = {ids[0] if replicas == "first" else ids[-1] for ids in groups}
        dropped = {i for ids in groups for i in ids} - keep
        return df[~df["run_id"].isin(dropped)], [note]
    keys = [c for c in POINT if c in df] + [c for c in ("round",) if c in df]
    numeric = [c for c in df.select_dtypes("number").columns if c not in (*keys, "run_id")]
    firsts = df.sort_values("run_id").groupby(keys, dropna=False, sort=False).first().reset_index()
    means = df.groupby(keys, dropna=False, sort=False)[numeric].mean().reset_index()
    merged = firsts.drop(columns=numeric).merge(means, on=keys, how="left")
    return merged[[c for c in df.columns if c in merged]], [note]


def _describe_point(df: pd.DataFrame, ids: list[int]) -> str:
    row = df[df["run_id"] == ids[0]].iloc[0]
    what = ", ".join(f"{c}={row[c]}" for c in ("criterion", "mask1", "mask0") if c in row and pd.notna(row[c]))
    return f"{what + ', ' if what else ''}seed={row['seed']}: runs {', '.join(map(str, ids))}"


def paired_with_baseline(df: pd.DataFrame, factor: str, baseline: str) -> tuple[pd.DataFrame, list[str]]:
    """The runs (one per point) that pair with the baseline: a condition's runs of the seeds the baseline holds with
    the same initial weights, and the baseline's runs of seeds some condition holds; one line per run left out.
    What a study's figure and tests then show are the same samples."""
    runs = df.drop_duplicates("run_id")
    base = runs[runs[factor] == baseline]
    base_seeds = dict(zip(base["seed"], base["init_hash"]))
    keep, left, used = set(base["run_id"]), [], set()
    for row in runs[runs[factor] != baseline].itertuples(index=False):
        row = row._asdict()
        if base_seeds.get(row["seed"]) == row["init_hash"]:
            keep.add(row["run_id"])
            used.add(row["seed"])
        else:
            left.append(f"{factor}={row[factor]} seed {row['seed']} (run {row['run_id']}): no {baseline} run of that "
                        f"seed with the same initial weights")
    for row in base.itertuples(index=False):
        row = row._asdict()
        if row["seed"] not in used:
            keep.discard(row["run_id"])
            left.append(f"{factor}={baseline} seed {row['seed']} (run {row['run_id']}): no other {factor} has that "
                        f"seed")
    return df[df["run_id"].isin(keep)], left


def pair_seeds(a: pd.DataFrame, b: pd.DataFrame) -> tuple[list, list[str]]:
    """The seeds two groups of one point each share with equal initial weights, and one line per seed left out."""
    for group in (a, b):
        twice = sorted(group.loc[group["seed"].duplicated(), "seed"].unique().tolist())
        if twice:
            raise ComparisonError(f"seed(s) {', '.join(map(str, twice))} appear in more than one run of one group: "
                                  f"the runs differ in a column the comparison does not name (pass run_id, "
                                  f"condition and science columns so replicas and settings can be told apart)")
    ha, hb = a.set_index("seed")["init_hash"], b.set_index("seed")["init_hash"]
    shared = sorted(s for s in set(ha.index) & set(hb.index) if ha[s] == hb[s])
    left = [f"seed {s}: only one side has it" for s in sorted(set(ha.index) ^ set(hb.index), key=str)]
    left += [f"seed {s}: other initial weights ({ha[s][:12]} vs {hb[s][:12]})"
             for s in sorted(set(ha.index) & set(hb.index), key=str) if ha[s] != hb[s]]
    return shared, left


def _test(a: pd.DataFrame, b: pd.DataFrame, metric: str, paired: bool) -> dict:
    if paired:
        diffs = a.set_index("seed")[metric].sort_index().to_numpy(float) - \
            b.set_index("seed")[metric].sort_index().to_numpy(float)
        if np.ptp(diffs) == 0:
            raise _Skip(f"every paired difference is {diffs[0]:.6g} (constant): no t-test")
        stats = DescrStatsW(diffs)
        t, p, dof = stats.ttest_mean(0.0)
        low, high = stats.tconfint_mean(0.05)
        return {"test": "paired t", "diff": float(diffs.mean()), "ci_low": low, "ci_high": high, "t": t,
                "df": dof, "p": p}
    x, y = a[metric].to_numpy(float), b[metric].to_numpy(float)
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        raise _Skip(f"both groups are constant ({x[0]:.6g} and {y[0]:.6g}): no t-test")
    means = CompareMeans(DescrStatsW(x), DescrStatsW(y))
    t, p, dof = means.ttest_ind(usevar="unequal")
    low, high = means.tconfint_diff(0.05, usevar="unequal")
    return {"test": "Welch t (unpaired, as asked)", "diff": float(x.mean() - y.mean()), "ci_low": low,
            "ci_high": high, "t": t, "df": dof, "p": p}


class _Skip(Exception):
    pass


def _checked(df: pd.DataFrame, factor: str, baseline: str, metric: str, correction: str | None,
             completed_only: bool) -> tuple[pd.DataFrame, list[str]]:
    """The runs ``compare`` compares (completed ones, unless told) and the conditions among them; a
    ComparisonError saying why when there is nothing to compare."""
    for column in (factor, metric, "percent_remaining", "seed", "init_hash"):
        if column not in df:
            raise ComparisonError(f"no column {column!r} in the runs; columns: {', '.join(df.columns)}")
    if correction not in (None, "holm"):
        raise ComparisonError(f"correction={correction!r} is not valid; valid choices: 'holm', None")
    data = df[df["status"] == "COMPLETED"] if completed_only and "status" in df else df
    if data.empty:
        raise ComparisonError("no completed runs to compare")
    conditions = sorted(map(str, data[factor].dropna().unique()))
    if baseline not in conditions:
        raise ComparisonError(f"baseline {factor}={baseline!r} has no runs; {factor} values present: "
                              f"{', '.join(conditions)}")
    if len(conditions) < 2:
        raise ComparisonError(f"only {factor}={baseline!r} is present: nothing to compare it with")
    check_comparable(data, factor)
    return data, conditions


def _comparisons(data: pd.DataFrame, conditions: list[str], factor: str, baseline: str, metric: str,
                 paired: bool) -> tuple[list[dict], list[str], list[str]]:
    """One row per (percent remaining, condition other than the baseline) that can be tested; the comparisons
    left out, and the seeds left out of a pairing, each with its reason."""
    data = data.assign(_percent=data["percent_remaining"].round(PERCENT_DECIMALS))
    rows, skipped, unpaired = [], [], []
    for percent, at_percent in data.groupby("_percent", sort=False):
        base_all = at_percent[at_percent[factor] == baseline]
        for condition in conditions:
            if condition == baseline:
                continue
            group = at_percent[at_percent[factor] == condition]
            where = f"{factor}={condition} vs {baseline} at {percent:.4g}% remaining"
            base = base_all
            if paired and len(group) and len(base):
                shared, left = pair_seeds(group, base)
                unpaired += [f"{where}: {line}" for line in left]
                group, base = group[group["seed"].isin(shared)], base[base["seed"].isin(shared)]
            if len(group) < 2 or len(base) < 2:
                what = "paired seeds" if paired else "runs"
                skipped.append(f"{where}: {len(group)} and {len(base)} {what} (a t-test needs 2 or more in each)")
                continue
            try:
                result = _test(group, base, metric, paired)
            except _Skip as reason:
                skipped.append(f"{where}: {reason}")
                continue
            rows.append({"percent_remaining": percent, "round": int(group["round"].iloc[0]),
                         "condition": condition, "baseline": baseline, "n": len(group),
                         "mean": group[metric].mean(), "std": group[metric].std(ddof=1), "n_baseline": len(base),
                         "mean_baseline": base[metric].mean(), "std_baseline": base[metric].std(ddof=1),
                         **result})
    return rows, skipped, unpaired


def compare(df: pd.DataFrame, factor: str = "criterion", baseline: str = "random", metric: str = "test_acc",
            correction: str | None = "holm", alpha: float = 0.05, completed_only: bool = True,
            replicas: str = "refuse", paired: bool = True) -> pd.DataFrame:
    """One row per (percent_remaining, condition != baseline); see the module docstring.

    Columns: ``COLUMNS`` (``diff`` = condition mean - baseline mean with its 95% CI; ``significant`` is
    p_holm < alpha with ``correction='holm'``; with ``correction=None`` there is no p_holm and p decides).
    Comparisons that cannot be made (fewer than 2 seeds, constant groups) are left out and listed, with the reason,
    in ``result.attrs["skipped"]``; seeds left out of a pairing in ``result.attrs["unpaired"]``; replicas met in
    ``result.attrs["replicas"]`` (each warned about); if no comparison can be made, ComparisonError says why.
    """
    data, conditions = _checked(df, factor, baseline, metric, correction, completed_only)
    data, replica_notes = one_per_point(data, replicas)
    rows, skipped, unpaired = _comparisons(data, conditions, factor, baseline, metric, paired)
    if not rows:
        raise ComparisonError("no comparison could be made: " + "; ".join(skipped))
    table = pd.DataFrame(rows)
    if correction == "holm":
        table["p_holm"] = table.groupby("percent_remaining")["p"].transform(
            lambda p: multipletests(p, alpha=alpha, method="holm")[1])
        table["significant"] = table["p_holm"] < alpha
    else:
        table["significant"] = table["p"] < alpha
    table = table.sort_values(["percent_remaining", "condition"], ascending=[False, True]).reset_index(drop=True)
    table = table[[c for c in COLUMNS if c in table]]
    table.attrs.update({"skipped": skipped, "unpaired": unpaired, "replicas": replica_notes, "factor": factor,
                        "metric": metric, "alpha": alpha})
    if skipped:
        warnings.warn(f"{len(skipped)} comparison(s) left out: " + "; ".join(skipped[:3]) +
                      (" ..." if len(skipped) > 3 else ""), stacklevel=2)
    if unpaired:
        warnings.warn(f"{len(unpaired)} run(s) left out of the pairing by seed: " + "; ".join(unpaired[:3]) +
                      (" ..." if len(unpaired) > 3 else ""), stacklevel=2)
    for note in replica_notes:
        warnings.warn(note, stacklevel=2)
    return table
