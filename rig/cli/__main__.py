"""``python -m rig.cli``: the same as the ``rig`` command."""

import sys

from rig.cli import main

sys.exit(main())
