"""python -m clip_search_plugin.engine: the engine's command line."""

import sys

from .cli import main

sys.exit(main())
