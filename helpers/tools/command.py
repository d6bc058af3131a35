"""How every command of the book ends: a user mistake is one ``error:`` line on stderr and exit
status 2; Ctrl-C is one line and status 130; SIGTERM is one line and status 143. Both signals
arrive as exceptions, so the clean-up that ``files.new_directory`` and ``files.atomic_write`` do
on any exception runs first: nothing half-written is left behind. (Light on purpose: ``make
student`` uses it without importing torch.)"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

# Every error the book raises for a bad input is a ValueError (CheckpointError, ConfigError,
# TokenizerError, ChatError, GGUFError, ...) or an OSError with a message naming the file.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MemoryError)


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that the same clean-up runs as for Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


def run_command(command: Callable[[], int], errors: tuple[type[BaseException], ...] = USER_ERRORS) -> int:
    """``command()``'s exit status; one of ``errors`` becomes one ``error:`` line and status 2,
    Ctrl-C 130 and SIGTERM 143, each with one line. SIGTERM's handler is installed only while
    ``command`` runs."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return command()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing was written", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
