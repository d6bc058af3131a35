"""``python -m helpers generate|logits|export-hf``: see helpers/tools/cli.py."""

import os
import signal
import sys


def _interrupted_while_starting(signum, frame):
    # Importing torch takes seconds. A KeyboardInterrupt raised in the middle of it can be
    # swallowed by a library's own import fallback and come back as an unrelated ImportError,
    # so Ctrl-C here ends the process at once: nothing has been opened or written yet.
    os.write(2, b"error: interrupted (Ctrl-C) while starting; nothing was written\n")
    os._exit(130)


signal.signal(signal.SIGINT, _interrupted_while_starting)
from .tools.cli import main  # noqa: E402

signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on main() turns Ctrl-C into one line

if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C in the instant main() restores its signal handlers, after its own handling
        os.write(2, b"error: interrupted (Ctrl-C); nothing was written\n")
        code = 130
    sys.exit(code)
