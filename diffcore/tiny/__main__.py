"""`python -m diffcore.tiny train-vae|train-t2i|train-clip|check`: the tiny models' recipe (see the package)."""

import sys

from . import main

sys.exit(main())
