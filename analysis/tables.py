"""Tables as text: a frame as a GitHub-flavoured Markdown table (the report, the mask section and the studies)."""

from __future__ import annotations

import pandas as pd


def markdown_table(df: pd.DataFrame, floats: str = "{:.4g}") -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def cell(value):
        if isinstance(value, float):
            return floats.format(value)
        return str(value)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
