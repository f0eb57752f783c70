"""``python -m landscape`` is the ``landscape`` command; ``torchrun --nproc_per_node N -m landscape scan ...``
(or ``spectrum``) runs it on N processes (see ``landscape.cli``)."""

import sys

from landscape.cli import main

sys.exit(main())
