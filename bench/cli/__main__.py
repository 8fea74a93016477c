"""``python -m bench.cli`` (e.g. under ``torchrun``) is the ``bench`` command."""

import sys

from bench.cli.main import main

sys.exit(main())
