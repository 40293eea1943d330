"""``python -m ticketlab``: the ``ticketlab`` command (``ticketlab.cli``)."""

import sys

from ticketlab.cli import main

sys.exit(main())
