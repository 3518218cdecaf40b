"""`python -m npxception` is the `npxception` command."""

import sys

from .cli import main

sys.exit(main())
