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
from typing import Callable, Sequence

import pandas as pd

from analysis import figures, masks as mask_analysis
from analysis.conditions import condition_columns
from analysis.query import QueryError, load_kind, resolve
from analysis.stats import ComparisonError, one_per_point
from analysis.tables import markdown_table
from ticketlab.kinds import KINDS
from ticketlab.registry import Registry


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


def studies_section(runs: pd.DataFrame, kind, spec, out: Path, replicas: str,
                    masks: bool) -> tuple[list[Path], list[str], list[str], list[str]]:
    """The runs of a kind with a record per round (lottery runs): ``runs.csv``, every study of
    ``ticketlab.schema.STUDIES`` the runs support, one comparison per setting, early stopping and, with ``masks``,
    what the masks are (``analysis.masks``). (files, summary lines, notes, report.md sections)."""
    runs.to_csv(out / "runs.csv", index=False)
    completed = runs[runs["status"] == "COMPLETED"]
    notes = [f"{completed['run_id'].nunique()} completed {kind.name} runs of {runs['run_id'].nunique()}"]
    files, summary, more_notes, sections = _lottery_section(runs, out, replicas)
    files, notes = [out / "runs.csv", *files], notes + more_notes
    if masks:
        more_files, more_sections, more_notes = mask_analysis.report_section(runs, spec, None, out)
        files, sections, notes = files + more_files, sections + more_sections, notes + more_notes
    return files, summary, notes, sections


def summary_section(runs: pd.DataFrame, kind, spec, out: Path, replicas: str,
                    masks: bool) -> tuple[list[Path], list[str], list[str], list[str]]:
    """The runs of a kind with one record per run: ``<kind>_runs.csv`` and the mean of its ``metric`` over seeds per
    setting (``<kind>_summary.md``). (files, summary lines, notes, report.md sections)."""
    csv, md = out / f"{kind.name}_runs.csv", out / f"{kind.name}_summary.md"
    runs.to_csv(csv, index=False)
    done, seen = one_per_point(runs[runs["status"] == "COMPLETED"], replicas)
    notes = [f"{kind.name}: {note}" for note in seen]
    columns = condition_columns(done)
    text = done.assign(**{c: done[c].map(str) for c in columns})
    group = [c for c in columns if text[c].nunique() > 1] or [c for c in ("arch", "data") if c in done] \
        or ["experiment"]  # a kind with no arch or data (one of one's own): all its runs, one setting
    table = text.groupby(group, dropna=False)[kind.metric].agg(["count", "mean", "std"]).reset_index()
    title, label = kind.title or f"{kind.name} runs", kind.metric_label or kind.metric
    md.write_text(f"# {title}: {label} ({kind.metric}), mean over seeds\n\n" + markdown_table(table))
    summary = [f"[{kind.name}] {' '.join(f'{c}={r[c]}' for c in group)}: {label} {r['mean']:.4f} over "
               f"{r['count']} seed(s)" for r in table.to_dict("records")]
    return [csv, md], summary, notes, [f"### {title}", "", markdown_table(table)]


# a kind's section of the report (``Kind.report``): (runs, kind, database, folder, replicas, masks) ->
# (files, summary lines, notes, report.md sections)
SECTIONS: Registry[Callable] = Registry("report section")
SECTIONS.add("studies", studies_section)
SECTIONS.add("summary", summary_section)


def write_report(mongo, db_name: str | None, out_dir: str | Path, where=None, kinds: Sequence[str] | None = None,
                 replicas: str = REPLICAS, masks: bool = True) -> dict:
    """Write the report; returns {"files": [...], "summary": [...], "notes": [...]}.

    ``mongo``/``db_name`` as for ``analysis.load_runs``; ``kinds``: the kinds of experiment it covers (default every
    kind, ``ticketlab.kinds``; the study's own report: lottery runs only), each in its section (``SECTIONS``). The
    runs are grouped by setting (configs that differ in more than a study's factor, the seed and execution keys):
    each setting gets its own comparison, in a folder named by the keys that set it apart, never pooled with
    another. Each point counts once (``replicas``: which of its runs, see ``analysis.stats.one_per_point``); the
    notes say how many replicas there were. ``masks``: when runs stored their masks (artifacts), a section on what
    the masks are (``analysis.masks``: overlaps against chance, sign flips, the mask-0 prediction), in ``masks/``."""
    kinds = list(KINDS.names() if kinds is None else kinds)
    if not kinds or any(kind not in KINDS for kind in kinds):
        raise QueryError(f"kinds={kinds!r} is not valid; valid choices: {', '.join(KINDS.names())}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = resolve(mongo, db_name)
    frames = {kind: load_kind(kind, spec, where=where) for kind in kinds}
    if all(frame.empty for frame in frames.values()):
        raise QueryError(f"no {' or '.join(kinds)} runs in database {spec.db_name!r}"
                         + (f" matching {where}" if where else ""))
    files, summary, notes, sections = [], [], [], []
    for name, frame in frames.items():
        if not frame.empty:
            kind = KINDS.get(name)
            parts = SECTIONS.get(kind.report)(frame, kind, spec, out, replicas, masks)
            files, summary, notes, sections = (a + b for a, b in zip((files, summary, notes, sections), parts))
    index = ["# ticketlab report", "", f"database `{spec.db_name}`" + (f", where {where}" if where else ""), "",
             "## Summary", "", *[f"- {line}" for line in summary], "", "## Figures and tables", "", *sections,
             "## Notes", "", *[f"- {line}" for line in notes], "", "## Files", "",
             *[f"- [{p.relative_to(out).as_posix()}]({p.relative_to(out).as_posix()})" for p in files]]
    (out / "report.md").write_text("\n".join(index) + "\n")
    files.append(out / "report.md")
    return {"files": files, "summary": summary, "notes": notes}
