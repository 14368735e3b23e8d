"""`python -m diffcore.bench`: see diffcore.bench."""

import sys

from .command import main

sys.exit(main())
