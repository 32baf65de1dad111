"""``python -m mrk8s.cli``: the ``mrk8s`` command."""

import sys

from mrk8s.cli import main

sys.exit(main())
