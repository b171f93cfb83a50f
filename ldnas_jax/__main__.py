"""``python -m ldnas_jax``: see :mod:`ldnas_jax.cli`."""

import sys

from ldnas_jax.cli import main

sys.exit(main())
