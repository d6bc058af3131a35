"""``python -m helpers generate|logits|export-hf``: see helpers/tools/cli.py."""

import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
