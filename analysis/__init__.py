"""ticketlab's analysis: the run database into pandas, per-percentage t-tests across seeds, and figures.

    import analysis
    df = analysis.load_runs("127.0.0.1:27017:lottery", where={"data": "fashion_mnist"})
    table = analysis.compare(df[(df.mask1 == "original") & (df.mask0 == "zero")], factor="criterion",
                             baseline="random", metric="test_acc")
    runs, curves = analysis.load_runs("127.0.0.1:27017:lottery", where={"seed": 1}, metrics=["val_acc"])

The database is named as for every ticketlab command (``HOST:PORT:DB``, ``mongodb://user:pw@host:port/DB?...``,
or ``$TICKETLAB_MONGO_URI`` when None). Reads the run record declared in ``ticketlab.schema`` (see
docs/run-record.md); it never imports the experiment code (no torch, no Sacred needed) and does not choose a
matplotlib backend.
"""

from analysis.query import QueryError, load_curves, load_runs, load_supermask_runs
from analysis.stats import ComparisonError, compare

__all__ = ["ComparisonError", "QueryError", "compare", "load_curves", "load_runs", "load_supermask_runs"]
