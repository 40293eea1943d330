"""ticketlab: what the science core (``masking``), the experiments and the analysis share, with no heavy imports.

``ticketlab.schema`` declares the run schema once: the records a run stores and what analysis reads of them.
"""
