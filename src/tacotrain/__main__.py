"""``python -m tacotrain``: the same as the ``tacotrain`` command. torchrun starts training
processes this way: ``torchrun --standalone --nproc-per-node N -m tacotrain train ...``."""

import sys

from tacotrain.cli import main

sys.exit(main())
