"""``python -m transferlearn``: the command line (see ``transferlearn.cli``)."""

import sys

from .cli import main

sys.exit(main())
