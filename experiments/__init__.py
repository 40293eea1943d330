"""ticketlab's Sacred experiments: ``python -m experiments.lottery``, ``experiments.supermask``,
``experiments.sweep`` and ``experiments.upload``."""

import warnings

# sacred 0.8.7 imports pkg_resources, which warns on every start
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
