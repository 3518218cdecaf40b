"""``python -m npxception.weights_tools``: see :mod:`npxception.weights_tools.cli`."""

import sys

from .cli import main

sys.exit(main())
