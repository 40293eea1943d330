"""Per-percentage comparisons across seeds: the rebuttal's rule, one test per pruning percentage.

``compare(df, factor="criterion", baseline="random", metric="test_acc")`` tests, at every percent of weights
remaining and for every condition of ``factor``, the condition's runs against the baseline's. Nothing is pooled
across percentages (iterative pruning correlates them). The runs pair when both groups hold the same seeds with
equal ``init_hash`` (the same initial weights): then a paired t-test on the per-seed differences; otherwise
Welch's unequal-variance t-test. statsmodels does the arithmetic; Holm's correction runs across the conditions of
one percentage.
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


class ComparisonError(ValueError):
    """The runs cannot be compared as asked; the message says why and what to do."""


def check_comparable(df: pd.DataFrame, factor: str) -> None:
    """Raise unless the runs differ only in ``factor``, the seed and execution keys: every other config value
    (``analysis.conditions``) is one value across the runs. Nothing is ever pooled."""
    diff = differences(df, factor)
    if diff:
        raise ComparisonError(refusal(diff, factor))


def _pairs(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two groups hold the same seeds with the same initial weights, one run per seed."""
    if a["seed"].duplicated().any() or b["seed"].duplicated().any() or set(a["seed"]) != set(b["seed"]):
        return False
    hashes = a.set_index("seed")["init_hash"], b.set_index("seed")["init_hash"]
    return bool((hashes[0] == hashes[1].reindex(hashes[0].index)).all())


def _test(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> dict:
    x, y = a[metric].to_numpy(float), b[metric].to_numpy(float)
    if _pairs(a, b):
        diffs = a.set_index("seed")[metric].sort_index().to_numpy(float) - \
            b.set_index("seed")[metric].sort_index().to_numpy(float)
        if np.ptp(diffs) == 0:
            raise _Skip(f"every paired difference is {diffs[0]:.6g} (constant): no t-test")
        stats = DescrStatsW(diffs)
        t, p, dof = stats.ttest_mean(0.0)
        low, high = stats.tconfint_mean(0.05)
        return {"test": "paired t", "diff": float(diffs.mean()), "ci_low": low, "ci_high": high, "t": t,
                "df": dof, "p": p}
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        raise _Skip(f"both groups are constant ({x[0]:.6g} and {y[0]:.6g}): no t-test")
    means = CompareMeans(DescrStatsW(x), DescrStatsW(y))
    t, p, dof = means.ttest_ind(usevar="unequal")
    low, high = means.tconfint_diff(0.05, usevar="unequal")
    return {"test": "Welch t", "diff": float(x.mean() - y.mean()), "ci_low": low, "ci_high": high, "t": t,
            "df": dof, "p": p}


class _Skip(Exception):
    pass


def compare(df: pd.DataFrame, factor: str = "criterion", baseline: str = "random", metric: str = "test_acc",
            correction: str | None = "holm", alpha: float = 0.05, completed_only: bool = True) -> pd.DataFrame:
    """One row per (percent_remaining, condition != baseline); see the module docstring.

    Columns: ``COLUMNS`` (``diff`` = condition mean - baseline mean with its 95% CI; ``significant`` is
    p_holm < alpha with ``correction='holm'``; with ``correction=None`` there is no p_holm and p decides).
    Comparisons that cannot be made (fewer than 2 runs in a group, constant groups) are left out and listed, with
    the reason, in ``result.attrs["skipped"]`` (and warned about); if none can be made, ComparisonError says why.
    """
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
    data = data.assign(_percent=data["percent_remaining"].round(PERCENT_DECIMALS))

    rows, skipped = [], []
    for percent, at_percent in data.groupby("_percent", sort=False):
        base = at_percent[at_percent[factor] == baseline]
        for condition in conditions:
            if condition == baseline:
                continue
            group = at_percent[at_percent[factor] == condition]
            where = f"{factor}={condition} vs {baseline} at {percent:.4g}% remaining"
            if len(group) < 2 or len(base) < 2:
                skipped.append(f"{where}: {len(group)} and {len(base)} runs (a t-test needs 2 or more in each)")
                continue
            try:
                result = _test(group, base, metric)
            except _Skip as reason:
                skipped.append(f"{where}: {reason}")
                continue
            rows.append({"percent_remaining": percent, "round": int(group["round"].iloc[0]),
                         "condition": condition, "baseline": baseline, "n": len(group),
                         "mean": group[metric].mean(), "std": group[metric].std(ddof=1), "n_baseline": len(base),
                         "mean_baseline": base[metric].mean(), "std_baseline": base[metric].std(ddof=1),
                         **result})
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
    table.attrs.update({"skipped": skipped, "factor": factor, "metric": metric, "alpha": alpha})
    if skipped:
        warnings.warn(f"{len(skipped)} comparison(s) left out: " + "; ".join(skipped[:3]) +
                      (" ..." if len(skipped) > 3 else ""), stacklevel=2)
    return table
