"""python -m clip_search_plugin.engine: the engine's command line (``selftest`` imports nothing heavy first)."""

import sys

if sys.argv[1:2] == ["selftest"]:
    from .serve.selftest import main as selftest

    sys.exit(selftest(sys.argv[2:]))

from .serve.cli import main

sys.exit(main())
