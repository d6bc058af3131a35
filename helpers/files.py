"""Writing files safely and printing paths: the one place both are done.

Every file the book writes (checkpoints, artifacts, logits, exports) goes through
``atomic_write``: the data goes to a temporary file beside the target, which is
renamed over the target only when it is complete, so an interrupted or failed
write leaves the old file (or nothing) and never half a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def display_path(path: str | Path) -> str:
    """A path as messages and notebooks print it: relative to the repository when it lies
    inside it (so the book's own files never show this machine's absolute path), otherwise
    exactly as the user gave it. Never resolves links (a symbolic-link loop is shown as is).
    """
    path = Path(path)
    if path.is_absolute():
        try:
            return str(Path(os.path.normpath(path)).relative_to(REPO_ROOT))
        except ValueError:
            pass
    return str(path)


def check_writable_target(path: str | Path, what: str = "output") -> Path:
    """Refuse a target that exists and is not a regular file, or whose folder does not exist.

    ``os.replace`` would turn a device, a FIFO or a socket into a regular file, and a
    directory cannot be replaced at all: say so before anything is computed.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows a symbolic link to what it points at
    except FileNotFoundError:
        mode = None
    except OSError as err:
        raise OSError(f"{what} {path}: cannot be used ({err.strerror})") from err
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise OSError(f"{what} {path} is {kind}: give the name of a file to create or replace")
    if not path.parent.is_dir():
        raise OSError(f"{what} {path}: the folder {path.parent} does not exist")
    probe = path.with_name(f".{path.name}.probe{os.getpid()}")
    try:  # can a file be created there at all? (permissions, a read-only or virtual file system)
        probe.touch(exist_ok=False)
    except OSError as err:
        raise OSError(f"{what} {path} cannot be written: {err.strerror} in {path.parent}") from err
    probe.unlink()
    return path


def atomic_write(path: str | Path, write: Callable[[Path], None], what: str = "output") -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it onto ``path``.

    On any failure (an exception, Ctrl-C) the temporary file is removed and ``path`` is
    left as it was. Raises OSError with the target's name if it cannot be written.
    """
    path = check_writable_target(path, what)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except RuntimeError as err:  # torch.save reports an unwritable file as RuntimeError
        reason = str(err).strip().splitlines()[-1].split("strerror:")[-1].strip()
        raise OSError(f"{what} {path} could not be written: {reason}") from err
    except PermissionError as err:
        raise OSError(f"{what} {path} could not be written: permission denied") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path
