"""codealign's command line from a checkout: `python launch.py --help` (installed: the `codealign` command)."""

import sys

from codealign.pipeline.cli import main

if __name__ == "__main__":  # vLLM's CPU engine forks workers that re-import the main module
    sys.exit(main())
