"""`python -m mlworkload`: the same as the `mlworkload` console script."""

import sys

from mlworkload.cli import main

sys.exit(main())
