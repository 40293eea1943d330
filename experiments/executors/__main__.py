"""``python -m experiments.executors BATCH.json``: a Slurm array task runs its unit of the batch (``slurm.main``)."""

import sys

from experiments.executors.slurm import main

sys.exit(main())
