"""``python -m vistoken``: the command line (as ``torchrun -m vistoken`` and ``accelerate
launch -m vistoken`` run it)."""

import sys

from .cli.app import main

sys.exit(main())
