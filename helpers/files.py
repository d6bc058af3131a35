"""Writing and reading files safely, and printing paths: the one place all three are done.

Every file the book writes (checkpoints, artifacts, logits, exports) goes through
``atomic_write``: the data goes to a new temporary file beside the target, created
exclusively under an unpredictable name (``mkstemp``: a planted file or symbolic link
cannot be written through), which is renamed over the target only when it is complete.
An interrupted or failed write leaves the old file (or nothing) and never half a file.
A directory (``export-hf``) is built the same way by ``new_directory``: in a temporary
directory beside the target, moved into place by one rename that the kernel refuses onto
a non-empty directory. Every file the book reads whole goes through ``read_bounded``,
which refuses one larger than such a file can sensibly be.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

REPO_ROOT = Path(__file__).resolve().parent.parent
# Temporary names are ".<the target's name, cut to this>.<random>.tmp": a target name of up to
# 255 bytes (the usual file system limit) still leaves room for the rest.
_NAME_PREFIX = 40


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


def is_disk_full(err: BaseException) -> bool:
    """Whether an error (OSError, or a library's own wrapping of one) means the disk is full."""
    return getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err)


def temporary_name(path: Path, kind: str = "tmp") -> str:
    """The prefix of a temporary file or directory beside ``path`` (mkstemp/mkdtemp add the random part)."""
    return f".{path.name[:_NAME_PREFIX]}.{kind}-"


def new_file_mode(directory: bool = False) -> int:
    """The permissions a newly created file (or directory) gets under the current umask; mkstemp
    and mkdtemp make them private (0600, 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


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
    try:  # can a file be created there at all? (permissions, a read-only or virtual file system)
        fd, probe = tempfile.mkstemp(prefix=temporary_name(path, "probe"), dir=path.parent)
    except OSError as err:
        raise OSError(f"{what} {path} cannot be written: {err.strerror} in {path.parent}") from err
    os.close(fd)
    os.unlink(probe)
    return path


class TargetExists(ValueError):
    """The output file exists and may not be replaced (a command without --force)."""


def refuse_existing(path: str | Path, what: str = "output") -> None:
    """Say at once, before any work, that ``path`` exists and will not be replaced. (A check
    only, for an early message: ``atomic_write(..., replace=False)`` is what guarantees it.)"""
    if os.path.lexists(path):
        raise TargetExists(f"{what} {path} exists: choose another name, or pass --force to replace it")


def _link_into_place(tmp: Path, path: Path, what: str) -> None:
    """Give the complete file ``tmp`` the name ``path`` only if no file has that name: a hard
    link, which the kernel refuses onto any existing name (no check-then-act)."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise TargetExists(f"{what} {path} exists: choose another name, or pass --force to replace it") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # a file system without hard links: reserve the name exclusively, then fill it by rename
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            raise TargetExists(f"{what} {path} exists: choose another name, or pass --force to replace it") from None
        os.replace(tmp, path)


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], what: str = "output", replace: bool = True
) -> Path:
    """Call ``write(f)`` on a new temporary file ``f`` (open for binary writing) beside ``path``,
    then rename it onto ``path``.

    The temporary file is created with O_CREAT | O_EXCL under a random name, and written
    through the descriptor that created it, so nothing planted beside the target is ever
    followed. On any failure (an exception, Ctrl-C) it is removed and ``path`` is left as
    it was. Raises OSError with the target's name if it cannot be written. ``replace=False``:
    an existing ``path`` (even one created while ``write`` ran) is left alone and
    ``TargetExists`` raised.
    """
    path = check_writable_target(path, what)
    if not replace:
        refuse_existing(path, what)
    fd, name = tempfile.mkstemp(prefix=temporary_name(path), suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())
        if replace:
            os.replace(tmp, path)  # a symbolic link at ``path`` is replaced, its target left alone
        else:
            _link_into_place(tmp, path, what)
    except (RuntimeError, OSError) as err:  # torch.save reports an unwritable file as RuntimeError
        if is_disk_full(err):
            raise OSError(f"{what} {path} could not be written: the disk is full (nothing was left behind)") from err
        if isinstance(err, PermissionError):
            raise OSError(f"{what} {path} could not be written: permission denied") from err
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).strip().splitlines()[-1]
        raise OSError(f"{what} {path} could not be written: {reason.split('strerror:')[-1].strip()}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str, what: str = "output", replace: bool = True) -> Path:
    """``atomic_write`` of a UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), what, replace)


class FileTooLarge(ValueError):
    """A file larger than such a file can be: refused before it is read whole."""


def read_bounded(path: str | Path, limit: int, what: str, why: str) -> bytes:
    """The bytes of a file, refused if it holds more than ``limit`` bytes (checked while
    reading, so a device or a FIFO that never ends is refused too, after ``limit`` bytes).
    ``what`` names the file in the message, ``why`` says what a real one weighs."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"{what} is larger than {limit:,} bytes ({why}): not read")
    return data


def read_text_file(path: str | Path, limit: int, what: str, why: str) -> str:
    """A UTF-8 text file a user named, read with ``read_bounded``; every failure is one message
    that names the file as ``what`` does: missing, a directory, unreadable, too large, not UTF-8."""
    try:
        data = read_bounded(path, limit, what, why)
    except FileNotFoundError:
        raise OSError(f"{what} does not exist") from None
    except IsADirectoryError:
        raise OSError(f"{what} is a directory: give a file") from None
    except OSError as err:
        raise OSError(f"{what} cannot be read ({err.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} is not UTF-8 text (byte {err.start})") from None


def open_regular(path: str | Path, what: str) -> BinaryIO:
    """``path`` opened for binary reading, refused unless it is a regular file: a FIFO would
    block the reader forever and a device never end. The check is made on the opened file
    (opened without waiting for a FIFO's writer), so nothing can be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise OSError(f"{what}: {err.strerror}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{what} is not a regular file (a directory, device, FIFO or socket): not read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _resolve_destination(out: Path, what: str) -> Path:
    """``out`` itself, or, if it is a symbolic link, the directory it points at (checked now,
    before any work: a loop or a link to nothing is refused)."""
    if not out.is_symlink():
        return out
    try:
        target = Path(os.path.realpath(out, strict=True))
    except OSError as err:
        problem = "a symbolic-link loop" if err.errno == errno.ELOOP else "a symbolic link to nothing"
        raise ValueError(f"{what} {display_path(out)} is {problem}: give a directory to create or replace") from err
    if not target.is_dir():
        raise ValueError(f"{what} {display_path(out)} exists and is not a directory")
    return target


def _check_not_the_source(out: Path, source: Path, what: str, source_name: str | None = None) -> None:
    dest, src = Path(os.path.realpath(out)), Path(os.path.realpath(source))
    if dest == src or dest in src.parents or src in dest.parents:
        relation = "is" if dest == src else ("contains" if dest in src.parents else "is inside")
        name = source_name or f"the directory being read ({display_path(source)})"
        raise ValueError(
            f"{what} {display_path(out)} {relation} {name}: writing there could destroy it; choose another directory"
        )


def _make_temporary_directory(out: Path, given: Path, what: str) -> Path:
    """The private directory beside ``out`` that is filled and then moved into place (its folder
    created if need be); a failure is one message naming ``out`` as the user gave it."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=temporary_name(out, "partial"), dir=out.parent))
    except OSError as err:
        blocker = next((p for p in reversed(out.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            reason = f"{display_path(blocker)} is a file, not a folder"
        else:
            reason = f"{err.strerror or err} in {display_path(out.parent)}"
        raise OSError(f"{what} {display_path(given)} cannot be created: {reason}") from None


def _publish_modes(tmp: Path) -> None:
    """mkdtemp and mkstemp make private entries (0700, 0600): give the directory and what lies at
    its top the permissions new ones get under the umask -- directories and executables 0755,
    other files 0644 under umask 022. Links are left alone (chmod would follow them)."""
    tmp.chmod(new_file_mode(directory=True))
    for f in tmp.iterdir():
        if not f.is_symlink():
            executable = f.is_dir() or bool(f.stat().st_mode & stat.S_IXUSR)
            f.chmod(new_file_mode(directory=executable))


@contextlib.contextmanager
def new_directory(
    out: str | Path,
    force: bool = False,
    what: str = "--out",
    source: str | Path | None = None,
    *,
    source_name: str | None = None,
    force_flag: str = "--force",
):
    """A new private directory beside ``out`` to fill in the ``with`` block; moved into place as
    ``out`` when the block succeeds, removed when it fails (also on Ctrl-C and, through the
    command line's signal handler, SIGTERM). Yields its path.

    Refused before the block runs: ``out`` a file, a symbolic-link loop or a link to nothing;
    ``out`` that is, contains or lies inside ``source`` (the directory being read, called
    ``source_name`` in the message if given), even with ``force``; ``out`` a directory that is
    not empty, unless ``force`` (``force_flag`` is how the message spells it); a folder that
    cannot be created. A link to a directory: the directory it points at is written, the link
    stays. The final move is a single ``rename``, which the kernel refuses onto a directory
    that is not empty: a directory created or filled while the block ran is never replaced
    without ``force`` -- it is left as it is, the new one removed, and the error says so. A
    disk that fills up gives one error naming it. The new directory and its top-level entries
    get the permissions the umask gives new ones (directories 0755, files 0644 under 022).
    """
    given = Path(out)
    out = _resolve_destination(given, what)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{what} {display_path(given)} exists and is not a directory")
    if source is not None:
        _check_not_the_source(out, Path(source), what, source_name)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(
            f"{what} {display_path(given)} is not empty: choose a new directory, or pass {force_flag} to replace it"
        )
    tmp = _make_temporary_directory(out, given, what)
    try:
        yield tmp
        _publish_modes(tmp)
        _move_into_place(tmp, out, given, force, what, force_flag)
    except OSError as err:
        if is_disk_full(err):
            raise OSError(f"{what} {display_path(given)}: the disk is full; the partial export was removed") from err
        raise
    except Exception as err:  # noqa: BLE001 - libraries (safetensors, tokenizers) wrap a full disk in their own types
        if is_disk_full(err):
            raise OSError(f"{what} {display_path(given)}: the disk is full; the partial export was removed") from err
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path, given: Path, force: bool, what: str, force_flag: str) -> None:
    """rename(tmp, out): onto nothing or an empty directory. With ``force``, a non-empty ``out``
    is first moved into a private holder beside it, and deleted once the new one is in place."""
    holder = None
    if force and out.is_dir() and any(out.iterdir()):
        holder = Path(tempfile.mkdtemp(prefix=temporary_name(out, "old"), dir=out.parent))
        out.rename(holder / "old")
    try:
        os.rename(tmp, out)
    except OSError as err:
        if holder is not None and not out.exists():
            (holder / "old").rename(out)  # put the user's directory back
            holder.rmdir()
            holder = None
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            kept = f"; your previous directory is in {display_path(holder)}" if holder else ""
            raise ValueError(
                f"{what} {display_path(given)} was created or filled by something else while writing: "
                f"it was left as it is and the new export removed{kept}; choose a new directory, or pass {force_flag}"
            ) from err
        raise
    if holder is not None:
        shutil.rmtree(holder)
