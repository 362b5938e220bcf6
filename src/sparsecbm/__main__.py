"""``python -m sparsecbm`` (and ``accelerate launch -m sparsecbm``): the command line."""

import sys

from .cli import main

sys.exit(main())
