"""Crash-safe file writing: the one atomic-write helper every socbi module uses (stdlib only).

:func:`atomic_write` writes to a temporary file in the target's directory, fsyncs it,
renames it over the target with :func:`os.replace` (atomic on POSIX and Windows) and
fsyncs the directory, so a crash at any point leaves either the old file or the new one.
:func:`check_file_target` is the argument check behind it (a directory or a missing
parent directory where a file is expected), usable on its own before long work starts.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_write", "check_file_target", "fsync_path"]


def check_file_target(path: PathLike, arg: str = "path", example: str = "NAME") -> Path:
    """``path`` as a Path if a file can be written there, else IsADirectoryError (it is a
    directory) or FileNotFoundError (its directory does not exist), each naming ``arg``,
    the value and the fix (``example``: a file name to suggest inside a directory). O(1)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{arg} {str(path)!r} is a directory; pass a file name, e.g. "
                                f"{str(p / example)!r}")
    directory = p.parent if str(p.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{arg} {str(path)!r}: directory {str(directory)!r} does not exist; "
                                f"create it first")
    return p



def atomic_write(path: PathLike, write: Callable[[Any], None], *, by_name: bool = False,
                 arg: str = "path") -> Path:
    """Write a file so that a crash leaves either the old content or the new one.

    ``write(fh)`` fills a binary file object opened on a temporary file in the target's
    directory (with ``by_name=True``, ``write(tmp_path)`` writes that path itself, for
    libraries that only save to a file name). The file is fsync'ed, renamed over
    ``path`` with :func:`os.replace` and the directory is fsync'ed so the rename survives
    a power cut. On any error the temporary file is removed and the old file is
    untouched. The new file keeps the replaced file's permissions (else 0666 minus the
    umask). IsADirectoryError / FileNotFoundError (naming ``arg``) when ``path`` is a
    directory or its directory is missing (:func:`check_file_target`). Returns the final path. O(file size). Thread-safe for distinct targets.
    """
    path = check_file_target(path, arg)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(directory))
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; give the usual permissions
        if by_name:
            os.close(fd)
            write(tmp)
            fsync_path(Path(tmp))
        else:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_path(directory)
    return path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (its entries); a platform or filesystem that cannot
    open or fsync a directory is skipped, as nothing more can be done there."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse directory fsync
        pass
    finally:
        os.close(fd)


def _file_mode(path: Path) -> int:
    """The mode of the file being replaced, else 0666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)  # read the umask (briefly 0 for this process)
        os.umask(mask)
        return 0o666 & ~mask
