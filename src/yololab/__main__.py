"""``python -m yololab`` (used by ``torchrun -m yololab train ...``)."""

import sys

from .cli import main

sys.exit(main())
