"""``python -m ehflow_core``: see :mod:`ehflow_core.cli`."""

import sys

from .cli import main

sys.exit(main())
