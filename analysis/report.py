"""A report of a run database: the tidy runs, every comparison table and every figure the data support.

``write_report(mongo_uri, db_name, out_dir, where)`` writes into ``out_dir``:
``runs.csv`` (one row per run and round), for each study of ``ticketlab.schema.STUDIES`` with data
``compare_<study>.csv`` and ``.md`` and ``study_<study>.png``/``.pdf``, ``early_stopping.png``/``.pdf``,
``supermask_runs.csv`` and ``supermask_summary.md`` when there are Supermask runs, ``masks/`` when runs stored their
masks (``analysis.masks``), and ``report.md`` with the summary and the figures embedded. A database holding
several settings (runs whose configs differ in more than a study's factor) gets one comparison per setting, in a
subfolder named by the keys that set it apart (``training.eval_every=25/``), never pooled.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from analysis import figures, masks as mask_analysis
from analysis.conditions import condition_columns
from analysis.query import QueryError, load_runs, load_supermask_runs, resolve
from analysis.stats import ComparisonError, one_per_point
from analysis.tables import markdown_table


def sparsest_summary(table: pd.DataFrame, metric: str) -> list[str]:
    """One line per condition at the sparsest percentage of a comparison table (raw p and Holm-adjusted p)."""
    last = table[table["percent_remaining"] == table["percent_remaining"].min()]
    lines = []
    for row in last.itertuples(index=False):
        holm = f", p_holm={row.p_holm:.3g}" if hasattr(row, "p_holm") else ""
        lines.append(f"{row.condition}: {metric} {row.mean:.4f} vs {row.baseline} {row.mean_baseline:.4f} at "
                     f"{row.percent_remaining:.3g}% remaining (diff {row.diff:+.4f}, 95% CI [{row.ci_low:+.4f}, "
                     f"{row.ci_high:+.4f}], {row.test}, p={row.p:.3g}{holm}"
                     f"{', significant' if row.significant else ''})")
    return lines


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label.replace(", ", "__"))


REPLICAS = "first"  # the report counts each point once: its first run (a later rerun is a replica, not a sample)


def _lottery_section(runs: pd.DataFrame, out: Path,
                     replicas: str = REPLICAS) -> tuple[list[Path], list[str], list[str], list[str]]:
    """Every study, one comparison per setting: (files, summary lines, notes, report.md sections)."""
    files, summary, notes, sections = [], [], [], []
    for name, spec in figures.STUDIES.items():
        parts = figures.study_settings(runs, name)
        for label, part in parts:
            folder = out / _slug(label) if label else out
            tag = f"{name}" + (f" | {label}" if label else "")
            try:
                fig, table = figures.study(part, name, replicas=replicas)
            except ComparisonError as error:
                notes.append(f"{tag}: {error}")
                continue
            notes += [f"{tag}: {note}" for note in getattr(fig, "notes", [])]
            paths = figures.save(fig, folder, f"study_{name}") if fig is not None else []
            files += paths
            section = [f"### {spec.title}" + (f" ({label})" if label else ""), ""]
            section += [f"![{tag}]({p.relative_to(out).as_posix()})" for p in paths if p.suffix == ".png"]
            if table is None:
                notes.append(f"{tag}: figure without tests (fewer than 2 seeds per condition)")
            else:
                csv, md = folder / f"compare_{name}.csv", folder / f"compare_{name}.md"
                table.to_csv(csv, index=False)
                md.write_text(f"# {name}: {spec.factor} vs {spec.baseline} ({spec.metric})"
                              + (f", {label}" if label else "") + "\n\n" + markdown_table(table))
                files += [csv, md]
                lines = sparsest_summary(table, spec.metric)
                summary += [f"[{tag}] {line}" for line in lines]
                notes += [f"{tag}: left out: {reason}" for reason in table.attrs.get("skipped", [])]
                section += ["", *[f"- {line}" for line in lines],
                            "", f"Table: [{md.relative_to(out).as_posix()}]({md.relative_to(out).as_posix()})"]
            sections += section + [""]
        if len(parts) > 1:
            notes.append(f"{name}: {len(parts)} settings, compared apart: " + "; ".join(l for l, _ in parts))
    for label, part in figures.study_settings(runs, "criteria") or [("", runs)]:
        folder = out / _slug(label) if label else out
        try:
            fig = figures.early_stopping_figure(part, replicas=replicas)
        except ComparisonError as error:
            notes.append(f"early stopping: {error}")
            continue
        paths = figures.save(fig, folder, "early_stopping") if fig is not None else []
        files += paths
        sections += ["### Early stopping" + (f" ({label})" if label else ""), "",
                     *[f"![early stopping]({p.relative_to(out).as_posix()})" for p in paths if p.suffix == ".png"],
                     ""]
    return files, summary, notes, sections


KINDS = ("lottery", "supermask")  # the experiments a report covers


def write_report(mongo, db_name: str | None, out_dir: str | Path, where=None, kinds=KINDS,
                 replicas: str = REPLICAS, masks: bool = True) -> dict:
    """Write the report; returns {"files": [...], "summary": [...], "notes": [...]}.

    ``mongo``/``db_name`` as for ``analysis.load_runs``; ``kinds``: the experiments it covers (the study's own
    report: lottery runs only). The runs are grouped by setting (configs that differ in more than a study's
    factor, the seed and execution keys): each setting gets its own comparison, in a folder named by the keys that
    set it apart, never pooled with another. Each point counts once (``replicas``: which of its runs, see
    ``analysis.stats.one_per_point``); the notes say how many replicas there were. ``masks``: when runs stored
    their masks (artifacts), a section on what the masks are (``analysis.masks``: overlaps against chance, sign
    flips, the mask-0 prediction), in ``masks/``."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise QueryError(f"kinds={list(kinds)!r} is not valid; valid choices: {', '.join(KINDS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve(mongo, db_name)
    runs = load_runs(spec, where=where) if "lottery" in kinds else pd.DataFrame()
    supermasks = load_supermask_runs(spec, where=where) if "supermask" in kinds else pd.DataFrame()
    if runs.empty and supermasks.empty:
        raise QueryError(f"no {' or '.join(kinds)} runs in database {spec.db_name!r}"
                         + (f" matching {where}" if where else ""))
    files, summary, notes, sections = [], [], [], []
    if not runs.empty:
        runs.to_csv(out / "runs.csv", index=False)
        files.append(out / "runs.csv")
        completed = runs[runs["status"] == "COMPLETED"]
        notes.append(f"{completed['run_id'].nunique()} completed lottery runs of {runs['run_id'].nunique()}")
        more_files, summary, more_notes, sections = _lottery_section(runs, out, replicas)
        files += more_files
        notes += more_notes
        if masks:
            more_files, more_sections, more_notes = mask_analysis.report_section(runs, spec, None, out)
            files, sections, notes = files + more_files, sections + more_sections, notes + more_notes
    if not supermasks.empty:
        supermasks.to_csv(out / "supermask_runs.csv", index=False)
        done, seen = one_per_point(supermasks[supermasks["status"] == "COMPLETED"], replicas)
        notes += [f"supermask: {note}" for note in seen]
        columns = condition_columns(done)
        text = done.assign(**{c: done[c].map(str) for c in columns})
        group = [c for c in columns if text[c].nunique() > 1] or [c for c in ("arch", "data") if c in done]
        table = text.groupby(group, dropna=False)["test_acc_mean"].agg(["count", "mean", "std"]).reset_index()
        (out / "supermask_summary.md").write_text("# Learned Supermasks: test accuracy (mean over mask samples)"
                                                  "\n\n" + markdown_table(table))
        files += [out / "supermask_runs.csv", out / "supermask_summary.md"]
        summary += [f"[supermask] {' '.join(f'{c}={r[c]}' for c in group)}: test acc {r['mean']:.4f} over "
                    f"{r['count']} seed(s)" for r in table.to_dict("records")]
        sections += ["### Learned Supermasks", "", markdown_table(table)]
    index = ["# ticketlab report", "", f"database `{spec.db_name}`" + (f", where {where}" if where else ""), "",
             "## Summary", "", *[f"- {line}" for line in summary], "", "## Figures and tables", "", *sections,
             "## Notes", "", *[f"- {line}" for line in notes], "", "## Files", "",
             *[f"- [{p.relative_to(out).as_posix()}]({p.relative_to(out).as_posix()})" for p in files]]
    (out / "report.md").write_text("\n".join(index) + "\n")
    files.append(out / "report.md")
    return {"files": files, "summary": summary, "notes": notes}
