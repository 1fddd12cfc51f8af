"""``python -m scaledet.cli``: the ``scaledet`` command (for environments where the console
script is not on the PATH, and for tools that start scaledet with a given interpreter)."""

import sys

from scaledet.cli import main

sys.exit(main())
