"""``python -m dumpkit.cli``: the dumpkit command."""

import sys

from dumpkit.cli import main

sys.exit(main())
