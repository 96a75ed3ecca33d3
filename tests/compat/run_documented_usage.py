"""Start the project's server on 127.0.0.1:2025, then run documented_usage.py as it is.

Run inside a private network namespace (see test_documented_usage.py), so port 2025 is
free whatever else runs on the machine.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from tstorage_server.testing import serve

if __name__ == "__main__":
    with serve(memory=True, port=2025):
        runpy.run_path(str(Path(__file__).with_name("documented_usage.py")), run_name="__main__")
    sys.stdout.flush()
