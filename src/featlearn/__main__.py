"""``python -m featlearn``: the same as the ``featlearn`` command."""

import sys

from featlearn.cli import main

sys.exit(main())
