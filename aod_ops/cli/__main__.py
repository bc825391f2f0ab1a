"""``python -m aod_ops.cli``: the ``aod`` command."""

import sys

from aod_ops.cli import main

sys.exit(main())
