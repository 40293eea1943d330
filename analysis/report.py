"""A report of a run database: the tidy runs, every comparison table and every figure the data support.

``write_report(mongo_uri, db_name, out_dir, where)`` writes into ``out_dir``:
``runs.csv`` (one row per run and round), for each study of ``figures.STUDIES`` with data ``compare_<study>.csv``
and ``.md`` and ``study_<study>.png``/``.pdf``, ``early_stopping.png``/``.pdf``, ``supermask_runs.csv`` and
``supermask_summary.md`` when there are Supermask runs, and ``report.md`` listing all of it with a summary.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import figures
from analysis.query import QueryError, load_runs, load_supermask_runs
from analysis.stats import ComparisonError


def markdown_table(df: pd.DataFrame, floats: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(value):
        if isinstance(value, float):
            return floats.format(value)
        return str(value)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def sparsest_summary(table: pd.DataFrame, metric: str) -> list[str]:
    """One line per condition at the sparsest percentage of a comparison table."""
    last = table[table["percent_remaining"] == table["percent_remaining"].min()]
    lines = []
    for row in last.itertuples(index=False):
        p = getattr(row, "p_holm", row.p)
        lines.append(f"{row.condition}: {metric} {row.mean:.4f} vs {row.baseline} {row.mean_baseline:.4f} at "
                      f"{row.percent_remaining:.3g}% remaining (diff {row.diff:+.4f}, 95% CI [{row.ci_low:+.4f}, "
                      f"{row.ci_high:+.4f}], {row.test}, p={p:.3g}{', significant' if row.significant else ''})")
    return lines


def write_report(mongo_uri: str, db_name: str, out_dir: str | Path, where=None) -> dict:
    """Write the report; returns {"files": [...], "summary": [...], "notes": [...]}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(mongo_uri, db_name, where)
    supermasks = load_supermask_runs(mongo_uri, db_name, where)
    if runs.empty and supermasks.empty:
        raise QueryError(f"no lottery or supermask runs in database {db_name!r}"
                         + (f" matching {where}" if where else ""))
    files, summary, notes = [], [], []
    if not runs.empty:
        runs.to_csv(out / "runs.csv", index=False)
        files.append(out / "runs.csv")
        completed = runs[runs["status"] == "COMPLETED"]
        notes.append(f"{completed['run_id'].nunique()} completed lottery runs of {runs['run_id'].nunique()}")
        for name, (factor, baseline, _, metric, *_) in figures.STUDIES.items():
            try:
                paths, table = figures.study(runs, name, out)
            except ComparisonError as error:
                notes.append(f"{name}: {error}")
                continue
            files += paths
            if table is None:
                if paths:
                    notes.append(f"{name}: figure without tests (fewer than 2 seeds per condition)")
                continue
            table.to_csv(out / f"compare_{name}.csv", index=False)
            (out / f"compare_{name}.md").write_text(f"# {name}: {factor} vs {baseline} ({metric})\n\n"
                                                    + markdown_table(table))
            files += [out / f"compare_{name}.csv", out / f"compare_{name}.md"]
            summary += [f"[{name}] {line}" for line in sparsest_summary(table, metric)]
            notes += [f"{name}: left out: {reason}" for reason in table.attrs.get("skipped", [])]
        try:
            files += figures.early_stopping_figure(runs, out)
        except ComparisonError as error:
            notes.append(f"early stopping: {error}")
    if not supermasks.empty:
        supermasks.to_csv(out / "supermask_runs.csv", index=False)
        done = supermasks[supermasks["status"] == "COMPLETED"]
        group = [c for c in ("arch", "data", "signed_constant", "rescale", "score_init") if c in done]
        table = done.groupby(group, dropna=False)["test_acc_mean"].agg(["count", "mean", "std"]).reset_index()
        (out / "supermask_summary.md").write_text("# Learned Supermasks: test accuracy (mean over mask samples)"
                                                  "\n\n" + markdown_table(table))
        files += [out / "supermask_runs.csv", out / "supermask_summary.md"]
        summary += [f"[supermask] {' '.join(f'{c}={getattr(r, c)}' for c in group)}: test acc {r.mean:.4f} "
                    f"over {r.count} run(s)" for r in table.itertuples(index=False)]
    index = ["# ticketlab report", "", f"database `{db_name}`" + (f", where {where}" if where else ""), "",
             "## Summary", "", *[f"- {line}" for line in summary], "", "## Notes", "",
             *[f"- {line}" for line in notes], "", "## Files", "",
             *[f"- [{p.name}]({p.name})" for p in files]]
    (out / "report.md").write_text("\n".join(index) + "\n")
    files.append(out / "report.md")
    return {"files": files, "summary": summary, "notes": notes}
