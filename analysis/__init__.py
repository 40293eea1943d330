"""ticketlab's analysis: the run database into pandas, per-percentage t-tests across seeds, and figures.

    import analysis
    df = analysis.load_runs("mongodb://127.0.0.1:27017", "lottery", where={"data": "fashion_mnist"})
    table = analysis.compare(df[(df.mask1 == "original") & (df.mask0 == "zero")], factor="criterion",
                             baseline="random", metric="test_acc")

Reads the run record contract of ``experiments/lottery.py`` and ``experiments/supermask.py``; it never imports
the experiment code (no torch, no Sacred needed).
"""

from analysis.query import QueryError, load_runs, load_supermask_runs
from analysis.stats import ComparisonError, compare

__all__ = ["ComparisonError", "QueryError", "compare", "load_runs", "load_supermask_runs"]
