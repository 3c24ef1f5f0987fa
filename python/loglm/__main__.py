"""``python -m loglm``: the ``loglm`` command line."""
from __future__ import annotations

import sys

from loglm.cli import main

sys.exit(main())
