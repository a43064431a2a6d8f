"""``python -m train --config configs/cifar.yaml [key=value ...] [--workdir D] [--resume]``."""

import sys

from .cli import main

sys.exit(main())
