"""``python -m tacotrain.cli``: the same as the ``tacotrain`` command."""

import sys

from tacotrain.cli import main

sys.exit(main())
