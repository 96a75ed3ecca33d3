"""``python -m tstoraged.cli`` runs the command line (same as the ``tstoraged`` script)."""

import sys

from tstoraged.cli import main

sys.exit(main())
