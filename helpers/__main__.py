"""``python -m helpers generate|logits|export-hf``: see helpers/tools/cli.py."""

import sys

try:
    from .tools.cli import main  # imports torch: seconds, during which Ctrl-C must not print a traceback
except KeyboardInterrupt:
    print("error: interrupted (Ctrl-C) while starting; nothing was written", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    sys.exit(main())
