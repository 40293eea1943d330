"""Figures of the paper's studies: accuracy vs percent of weights remaining, with 95% confidence bands.

Every line is the mean over seeds with a t-based 95% band, clipped to the metric's range (``metric_bounds``:
accuracies in [0, 1], the early-stopping iteration in [0, iterations]); the x-axis is logarithmic with 100% on the
left. Each name keeps one style in every figure (``style``): the baselines of the studies (random, original, zero)
black and dashed (in a figure whose baseline is another name: grey and dotted, "(reference)"), every other name
its own color (``color``). A marker ``*`` above a point says the condition
differs from the baseline there (``stats.compare``, Holm-corrected); the markers of different conditions at one
point are stacked, not drawn over each other. One function per study of the paper; each writes PNG and PDF and
returns the paths.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from analysis.conditions import settings  # noqa: E402
from analysis.stats import (PERCENT_DECIMALS, ComparisonError, check_comparable, compare,  # noqa: E402
                            one_per_point, paired_with_baseline)
from ticketlab import schema  # noqa: E402

_PALETTE = plt.get_cmap("tab20").colors + plt.get_cmap("Dark2").colors
# the paper's vocabulary, each name with its own color in every figure (criteria, mask-1, mask-0 actions)
_NAMES = [
    "large_final", "small_final", "large_init", "small_init", "large_init_large_final", "small_init_small_final",
    "magnitude_increase", "movement", "large_final_same_sign", "large_final_diff_sign",
    "reinit", "reshuffle", "constant", "signed_reinit", "signed_reshuffle", "signed_constant",
    "init", "zero_if_toward_zero", "random_zero", "signed_bimodal",
]
COLORS = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(_NAMES)}
NICE_TICKS = [100, 70, 50, 30, 20, 10, 7, 5, 3, 2, 1, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01]
BASELINE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 2.2, "zorder": 5}
REFERENCE_STYLE = {"color": "dimgray", "linestyle": ":", "linewidth": 1.8, "zorder": 4}


STAR_STEP_POINTS = 7  # vertical offset between the significance markers of two conditions at one point
STAR_HALF_POINTS = 6  # a marker's half height (s=60) and a little air: what must fit below the axes' top


def color(name: str):
    """The color of a condition name: fixed for the paper's names, a stable hash-picked one otherwise."""
    if name in COLORS:
        return COLORS[name]
    return _PALETTE[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(_PALETTE)]


def baseline_names() -> set[str]:
    """The studies' control baselines (random, original, zero, ...): drawn black and dashed wherever they appear
    (a study whose baseline is one of the compared methods, ``control=False``, keeps that method's color)."""
    return {study.baseline for study in STUDIES.values() if study.control}


def style(name: str) -> dict:
    """The line style of a name, the same in every figure."""
    return BASELINE_STYLE if name in baseline_names() else {"color": color(name), "linewidth": 1.6}


def metric_bounds(df: pd.DataFrame, metric: str) -> tuple[float, float] | None:
    """The range a metric's values can take: accuracies [0, 1], the early-stopping iteration [0, iterations]."""
    if metric.endswith(("acc", "acc_mean")):
        return 0.0, 1.0
    if metric == "early_stop_iteration" and "iterations" in df:
        return 0.0, float(df["iterations"].max())
    return None


def mean_and_band(df: pd.DataFrame, by: str, metric: str,
                  bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Mean, n and 95% t-interval of ``metric`` per (``by``, percent_remaining), the interval clipped to
    ``bounds`` (the t-interval of values near a bound reaches past it)."""
    grouped = df.assign(_p=df["percent_remaining"].round(PERCENT_DECIMALS)).groupby([by, "_p"])[metric]
    out = grouped.agg(["mean", "std", "count"]).reset_index().rename(columns={"_p": "percent_remaining"})
    half = scipy_stats.t.ppf(0.975, np.maximum(out["count"] - 1, 1)) * out["std"] / np.sqrt(out["count"])
    out["low"], out["high"] = out["mean"] - half.fillna(0), out["mean"] + half.fillna(0)
    if bounds is not None:
        out["low"], out["high"] = out["low"].clip(*bounds), out["high"].clip(*bounds)
    return out


def plot_vs_remaining(df: pd.DataFrame, factor: str, baseline: str | None, metric: str, ax, ylabel: str,
                      significance: pd.DataFrame | None = None, styles: dict[str, dict] | None = None) -> None:
    """Draw one line per value of ``factor`` on ``ax``, bands within ``metric_bounds``; ``styles`` overrides the
    line style of some names (a figure that pairs names by color)."""
    bounds = metric_bounds(df, metric)
    bands = mean_and_band(df, factor, metric, bounds)
    starred = 0  # conditions with markers so far: each next one's markers sit one step higher
    tops: list[tuple[float, float]] = []  # (highest marker's y, its offset in points): room is made for each
    for name, line in bands.groupby(factor, sort=True):
        line = line.sort_values("percent_remaining", ascending=False)
        is_base = name == baseline
        # a control (random, ...) that is not this figure's baseline is a reference: grey and dotted, so it never
        # looks like the baseline
        reference = not is_base and baseline is not None and style(name) is BASELINE_STYLE
        line_style = (styles or {}).get(name) or (REFERENCE_STYLE if reference else style(name))
        ax.plot(line["percent_remaining"], line["mean"], marker="o", markersize=3,
                label=f"{name} (baseline)" if is_base else f"{name} (reference)" if reference else name,
                **line_style)
        ax.fill_between(line["percent_remaining"], line["low"], line["high"], color=line_style["color"],
                        alpha=0.12 if is_base else 0.2, linewidth=0)
        if significance is not None and not is_base:
            hits = significance[(significance["condition"] == name) & significance["significant"]]
            marked = line[line["percent_remaining"].isin(hits["percent_remaining"])]
            if marked.empty:
                continue
            shift = offset_copy(ax.transData, fig=ax.figure, y=STAR_STEP_POINTS * starred, units="points")
            ax.scatter(marked["percent_remaining"], marked["high"], marker="*", s=60, color=line_style["color"],
                       edgecolors="black", linewidths=0.4, zorder=6, transform=shift)
            tops.append((float(marked["high"].max()), STAR_STEP_POINTS * starred))
            starred += 1
    percent_axis(ax, bands["percent_remaining"].min(), bands["percent_remaining"].max())
    ax.set_ylabel(ylabel)
    note = "bands: 95% t-interval over seeds" + ("; * differs from baseline (Holm, p < 0.05)"
                                                  if significance is not None else "")
    ax.text(1.0, -0.17, note, transform=ax.transAxes, ha="right", va="top", fontsize=7)  # under the x label
    _room_for_markers(ax, tops)


def percent_axis(ax, low: float, high: float, label: str = "percent of weights remaining") -> None:
    """The x-axis of percent remaining: logarithmic, 100% on the left, ticks at round percentages in [low, high]."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.xaxis.set_major_locator(FixedLocator([t for t in NICE_TICKS if low * 0.9 <= t <= high * 1.1] or [high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)
    ax.grid(True, which="both", alpha=0.25)


def _room_for_markers(ax, tops: list[tuple[float, float]]) -> None:
    """Raise the y limit so every marker (at data y, lifted by its offset in points) is drawn inside the axes."""
    if not tops:
        return
    low, high = ax.get_ylim()
    height = ax.get_window_extent().height * 72 / ax.figure.dpi  # the axes' height in points
    needed = [low + (y - low) * height / max(height - offset - STAR_HALF_POINTS, 1.0) for y, offset in tops]
    if max(needed) > high:
        ax.set_ylim(low, max(needed))


def save(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``<out_dir>/<stem>.png`` and ``.pdf`` and close it; returns the two paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def study_figure(df: pd.DataFrame, factor: str, baseline: str | None, metric: str, title: str, ylabel: str,
                 significance: pd.DataFrame | None = None, styles: dict[str, dict] | None = None):
    """Accuracy vs percent remaining for one study, as a matplotlib Figure (``save`` writes it);
    ``significance`` (a ``compare`` table) adds the markers; ``styles`` as for ``plot_vs_remaining``."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_vs_remaining(df, factor, baseline, metric, ax, ylabel, significance, styles)
    ax.set_title(f"{title}\n{_subtitle(df, factor)}", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return fig


def _subtitle(df: pd.DataFrame, factor: str) -> str:
    """``arch=..., data=..., N seeds`` (N per condition; a range where they differ)."""
    parts = [f"{c}={df[c].iloc[0]}" for c in ("arch", "data") if df[c].nunique() == 1]
    seeds = df.groupby(factor)["seed"].nunique()
    low, high = int(seeds.min()), int(seeds.max())
    return ", ".join(parts + [f"{low} seeds" if low == high else f"{low}-{high} seeds"])


# ------------------------------------------------------------------------------------------------ the studies
# The studies are declared in ticketlab.schema (``Study``). Each selects its runs (its fixed columns) and has nothing
# to show when the data do not support it: fewer than two conditions, or no baseline. Runs of several settings
# (configs that differ in more than the factor) are never pooled: ``study_settings`` splits them.

STUDIES = schema.STUDIES


def select(df: pd.DataFrame, fixed: dict) -> pd.DataFrame:
    """The completed runs whose columns hold the ``fixed`` values."""
    keep = df["status"] == "COMPLETED"
    for column, value in fixed.items():
        keep &= df[column] == value
    return df[keep]


def _study_rows(df: pd.DataFrame, study: schema.Study) -> pd.DataFrame:
    """The completed runs of the study's fixed columns, and of its factor values when it names them."""
    runs = select(df, study.fixed)
    return runs[runs[study.factor].isin(study.values)] if study.values else runs


def _supported(runs: pd.DataFrame, study: schema.Study) -> bool:
    return runs[study.factor].nunique() >= 2 and study.baseline in set(runs[study.factor])


def study_runs(df: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """The completed runs of study ``name``, or None when they do not support it (fewer than two conditions, no
    baseline). ComparisonError when they mix settings (see ``study_settings``)."""
    study = STUDIES[name]
    runs = _study_rows(df, study)
    if not _supported(runs, study):
        return None
    check_comparable(runs, study.factor)
    return runs


def study_settings(df: pd.DataFrame, name: str) -> list[tuple[str, pd.DataFrame]]:
    """The settings of study ``name`` the data support: (label naming what sets it apart, its runs); the label
    is ``""`` when there is one setting."""
    study = STUDIES[name]
    runs = _study_rows(df, study)
    if not _supported(runs, study):
        return []
    return [(label, part) for label, part in settings(runs, study.factor) if _supported(part, study)]


def study(df: pd.DataFrame, name: str, replicas: str = "refuse"):
    """(Figure, comparison table) of study ``name`` on runs of one setting: the table is None when there are too
    few seeds for tests; (None, None) when the data do not support the study. ``save(fig, out_dir,
    f"study_{name}")`` writes the figure. The figure and the tests show the same samples: one run per point
    (``replicas``: see ``stats.one_per_point``) and the seeds each condition shares with the baseline
    (``stats.paired_with_baseline``); what was left out is listed in ``fig.notes`` (and the table's attrs)."""
    spec = STUDIES[name]
    runs = study_runs(df, name)
    if runs is None:
        return None, None
    runs, notes = one_per_point(runs, replicas)
    runs, unpaired = paired_with_baseline(runs, spec.factor, spec.baseline)
    notes += [f"left out of the pairing by seed: {line}" for line in unpaired]
    if not _supported(runs, spec):
        raise ComparisonError("no condition shares a seed with the baseline: " + "; ".join(unpaired[:3]))
    title = spec.title + "".join(f" ({c}={runs[c].iloc[0]})" for c in ("criterion", "mask1", "mask0")
                                 if c != spec.factor and c not in spec.fixed)  # the treatment it ran with
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what is left out is in table.attrs["skipped"]
        try:
            table = compare(runs, spec.factor, spec.baseline, spec.metric)
        except ComparisonError:
            table = None  # too few seeds for tests: lines and bands only
    fig = study_figure(runs, spec.factor, spec.baseline, spec.metric, title, spec.ylabel, table)
    fig.notes = notes
    if table is not None:
        table.attrs["notes"] = notes
    return fig, table


def early_stopping_figure(df: pd.DataFrame, replicas: str = "refuse"):
    """Early-stopping iteration vs percent remaining per criterion (the "tickets train faster" plot), over the
    criteria study's runs (mask1=original, mask0=zero; one per point, ``replicas`` as for ``study``), as a Figure;
    None when there are no such runs."""
    study = STUDIES["criteria"]
    baseline, runs = study.baseline, select(df, study.fixed)
    if runs.empty:
        return None
    check_comparable(runs, "criterion")
    runs, _ = one_per_point(runs, replicas)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_vs_remaining(runs, "criterion", baseline, "early_stop_iteration", ax, "early-stopping iteration")
    ax.set_title(f"Early-stopping iteration (minimum validation loss)\n{_subtitle(runs, 'criterion')}",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return fig
