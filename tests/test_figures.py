"""The numbers a figure draws: bands within the metric's range, the baseline black and dashed in every figure,
significance markers of two conditions at one point apart. Synthetic frames with the columns of ``load_runs``;
the drawn arrays are read back from the matplotlib Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis import figures  # noqa: E402

PERCENTS = [100.0, 80.0, 64.0]
ITERATIONS = 3000


def runs(values: dict[str, list[list[float]]], metric: str, factor: str = "criterion") -> pd.DataFrame:
    """One row per (condition, seed, percent): ``values[condition][seed index][percent index]``."""
    rows = []
    for condition, per_seed in values.items():
        for seed, series in enumerate(per_seed, start=1):
            for percent, value in zip(PERCENTS, series):
                row = {"criterion": "large_final", "mask1": "original", "mask0": "zero", "arch": "lenet300_100",
                       "data": "fashion_mnist", "seed": seed, "status": "COMPLETED", "iterations": ITERATIONS,
                       "percent_remaining": percent, "init_hash": f"init{seed}", "test_acc": 0.5,
                       "untrained_test_acc": 0.1, "early_stop_iteration": 1000}
                row.update({factor: condition, metric: value})
                rows.append(row)
    return pd.DataFrame(rows)


def bands(ax) -> list[np.ndarray]:
    """The y values of every band (fill_between polygon) on ``ax``."""
    return [path.vertices[:, 1] for collection in ax.collections if isinstance(collection, PolyCollection)
            for path in collection.get_paths()]


def test_accuracy_bands_stay_within_0_and_1():
    # three seeds near 0 and near 1: the t-interval (about mean +- 2.5 std) reaches past both ends
    df = runs({"random": [[0.0, 0.02, 0.99], [0.3, 0.0, 1.0], [0.0, 0.25, 0.7]],
               "large_final": [[0.01, 0.97, 1.0], [0.0, 0.7, 0.98], [0.35, 1.0, 0.6]]}, "untrained_test_acc")
    raw = figures.mean_and_band(df, "criterion", "untrained_test_acc")
    assert raw["low"].min() < 0 and raw["high"].max() > 1  # what was drawn before
    fig, ax = plt.subplots()
    figures.plot_vs_remaining(df, "criterion", "random", "untrained_test_acc", ax, "untrained test accuracy")
    drawn = bands(ax)
    assert len(drawn) == 2
    assert all(0 <= y.min() and y.max() <= 1 for y in drawn)
    assert min(y.min() for y in drawn) == 0 and max(y.max() for y in drawn) == 1  # clipped, not shifted
    plt.close(fig)


def test_early_stopping_figure_bands_within_iterations_and_random_black_dashed(tmp_path):
    df = runs({"random": [[2900, 100, 3000], [3000, 2800, 200], [100, 3000, 2900]],
               "large_final": [[3000, 2990, 50], [2000, 2950, 3000], [3000, 40, 2990]]}, "early_stop_iteration")
    fig = figures.early_stopping_figure(df)
    ax = fig.axes[0]
    assert all(0 <= y.min() and y.max() <= ITERATIONS for y in bands(ax))
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"random (baseline)", "large_final"}
    random = lines["random (baseline)"]
    assert mcolors.to_hex(random.get_color()) == "#000000" and random.get_linestyle() == "--"
    assert lines["large_final"].get_linestyle() == "-"
    assert mcolors.to_hex(lines["large_final"].get_color()) == mcolors.to_hex(figures.color("large_final"))
    paths = figures.save(fig, tmp_path, "early_stopping")  # saving is a separate step
    assert [p.name for p in paths] == ["early_stopping.png", "early_stopping.pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("factor,names", [("criterion", ["random", "large_final"]),
                                          ("mask1", ["original", "reinit"]), ("mask0", ["zero", "init"])])
def test_one_style_per_name_in_every_figure(factor, names):
    df = runs({n: [[0.5, 0.6, 0.7], [0.52, 0.61, 0.69]] for n in names}, "test_acc", factor)
    for baseline in (names[0], None):  # as a study's baseline, and in a figure without one
        fig, ax = plt.subplots()
        figures.plot_vs_remaining(df, factor, baseline, "test_acc", ax, "test accuracy")
        lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
        assert mcolors.to_hex(lines[names[0]].get_color()) == "#000000" and lines[names[0]].get_linestyle() == "--"
        assert mcolors.to_hex(lines[names[1]].get_color()) == mcolors.to_hex(figures.color(names[1]))
        plt.close(fig)


def test_significance_markers_of_two_conditions_at_one_point_do_not_overlap():
    df = runs({"random": [[0.5] * 3, [0.5] * 3], "large_final": [[0.6] * 3, [0.6] * 3],
               "large_init": [[0.6] * 3, [0.6] * 3]}, "test_acc")
    significance = pd.DataFrame([{"condition": c, "percent_remaining": 80.0, "significant": True}
                                 for c in ("large_final", "large_init")])
    fig, ax = plt.subplots()
    figures.plot_vs_remaining(df, "criterion", "random", "test_acc", ax, "test accuracy", significance)
    fig.canvas.draw()
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(stars) == 2
    # both markers at the same data point (80%, 0.6), drawn at different heights on screen
    screen = [star.get_offset_transform().transform(star.get_offsets())[0] for star in stars]
    assert screen[0][0] == pytest.approx(screen[1][0])
    assert abs(screen[0][1] - screen[1][1]) >= figures.STAR_STEP_POINTS * fig.dpi / 72 * 0.99
    plt.close(fig)


def test_significance_markers_at_the_top_are_drawn_inside_the_axes():
    """A significant point with the highest band of the figure: its marker (two conditions stacked) fits under the
    axes' top edge, and the figure says what the bands are."""
    top = ("large_final", "large_init", "magnitude_increase")  # three markers stacked at one point
    df = runs({"random": [[0.5, 0.5, 0.5], [0.52, 0.5, 0.5]],
               **{c: [[0.6, 0.8, 0.6], [0.62, 0.81 + 0.001 * i, 0.6]] for i, c in enumerate(top)}}, "test_acc")
    significance = pd.DataFrame([{"condition": c, "percent_remaining": 80.0, "significant": True} for c in top])
    fig = figures.study_figure(df, "criterion", "random", "test_acc", "criteria", "test accuracy", significance)
    ax = fig.axes[0]
    fig.canvas.draw()
    box = ax.get_window_extent()
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(stars) == 3
    half = figures.STAR_HALF_POINTS * fig.dpi / 72
    for star in stars:
        x, y = star.get_offset_transform().transform(star.get_offsets())[0]
        assert box.y0 <= y and y + half <= box.y1 + 0.5, (y, half, box)
    assert any("bands: 95% t-interval over seeds" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_a_control_that_is_not_the_figures_baseline_is_a_grey_dotted_reference():
    """Q9's figure compares mask sources against init_final and shows random for reference: random was drawn black
    and dashed like a baseline (a fresh-clone user could not tell the two apart). Now grey, dotted, "(reference)"."""
    df = runs({n: [[0.5, 0.6, 0.7], [0.52, 0.61, 0.69]] for n in ("init_final", "init_best", "random")}, "test_acc",
              "label")
    fig, ax = plt.subplots()
    figures.plot_vs_remaining(df, "label", "init_final", "test_acc", ax, "test accuracy")
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"init_final (baseline)", "init_best", "random (reference)"}
    reference, base = lines["random (reference)"], lines["init_final (baseline)"]
    assert reference.get_linestyle() == ":" and mcolors.to_hex(reference.get_color()) == mcolors.to_hex("dimgray")
    assert base.get_linestyle() == "--" and mcolors.to_hex(base.get_color()) == "#000000"  # the baseline's style
    plt.close(fig)
