"""`python -m scinsearch ...` runs the CLI."""

import sys

from scinsearch.cli import main

sys.exit(main())
