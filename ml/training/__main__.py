"""``python -m ml.training`` / ``torchrun --nproc_per_node=N -m ml.training``."""

import sys

from ml.training.entry import main

sys.exit(main())
