"""``python -m weights_tools``: see :mod:`weights_tools.cli`."""

import sys

from .cli import main

sys.exit(main())
