"""``python -m prune_env.cli``: the ``prune-env`` command."""

import sys

from prune_env.cli.main import main

sys.exit(main())
