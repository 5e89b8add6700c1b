"""Files only their owner can read: the data directory (0700), the SQLite ledger's files and ``master.key`` (0600).

The data directory is ``$KLING_BUDGET_HOME``, else the platform's user data directory; it holds the default
SQLite ledger and ``master.key``, which decrypts every stored secret.

* A directory kling-budget creates for them (the data directory, the directory of a new SQLite ledger) is
  created 0700.
* A file it creates is created 0600: the process umask is 077 while a ledger is opened, so the database and
  the ``-wal``, ``-shm`` and ``-journal`` files SQLite creates beside it (SQLite gives those the database's
  own mode) are private even under a permissive umask.
* An existing ledger file or ``master.key`` that others can read or write is tightened to 0600, with a
  warning: they are kling-budget's own and nobody else needs them (processes sharing a SQLite ledger run as
  one user; share between users through PostgreSQL). The platform's default data directory is tightened to
  0700 the same way. A directory you chose (``$KLING_BUDGET_HOME``, the directory of ``--db``) may hold other
  things, so it is never changed: a ``$KLING_BUDGET_HOME`` others can enter is only warned about.

On systems without POSIX permissions (Windows) this module changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "HOME_ENV",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "SQLITE_SIDE_FILES",
    "data_dir",
    "default_data_dir",
    "make_private_dir",
    "prepare_private_file",
    "private_umask",
    "tighten_files",
    "with_side_files",
]

HOME_ENV = "KLING_BUDGET_HOME"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

logger = logging.getLogger("kling_budget.files")

_POSIX = os.name == "posix"
_umask_lock = threading.Lock()
_warned: set[tuple[str, str]] = set()


def default_data_dir() -> Path:
    """The platform's user data directory for kling-budget (``~/.local/share/kling-budget`` on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("kling-budget", appauthor=False))


def data_dir() -> Path:
    """``$KLING_BUDGET_HOME``, else the platform's user data directory for kling-budget."""
    home = os.environ.get(HOME_ENV)
    return Path(home) if home else default_data_dir()


def _warn_once(path: Path, message: str) -> None:
    if (str(path), message) not in _warned:
        _warned.add((str(path), message))
        logger.warning("%s", message)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if missing, the directory itself 0700; return it.

    An existing directory is left as it is, except the platform's default data directory, tightened to 0700
    when others can enter it; a ``$KLING_BUDGET_HOME`` others can enter gets a warning.
    """
    existed = path.is_dir()
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if not _POSIX:
        return path
    if not existed:
        with contextlib.suppress(OSError):  # a umask without user bits must not lock us out of our own dir
            os.chmod(path, PRIVATE_DIR_MODE)
        return path
    mode = stat.S_IMODE(path.stat().st_mode)
    if not mode & 0o077:
        return path
    if _same(path, default_data_dir()):
        try:
            os.chmod(path, PRIVATE_DIR_MODE)
            _warn_once(path, f"tightened the permissions of the data directory {path} from {mode:o} to 700")
        except OSError:
            _warn_once(path, f"the data directory {path} is open to others (mode {mode:o}); run: chmod 700 {path}")
    elif _same(path, data_dir()):
        _warn_once(
            path,
            f"{HOME_ENV} {path} is open to others (mode {mode:o}); it holds the ledger and master.key: "
            f"run chmod 700 {path}",
        )
    return path


def tighten_files(paths: Iterable[Path]) -> None:
    """Make each existing file of ``paths`` 0600 if others can read or write it, with a warning (or only a
    warning when it belongs to another user)."""
    if not _POSIX:
        return
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue
        if not mode & 0o077:
            continue
        try:
            os.chmod(path, PRIVATE_FILE_MODE)
        except OSError:
            _warn_once(path, f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        else:
            _warn_once(path, f"tightened the permissions of {path} from {mode:o} to 600")


def with_side_files(path: Path, suffixes: Iterable[str]) -> list[Path]:
    """``path`` and the files beside it named ``path`` + each suffix (SQLite's ``-wal``, ``-shm`` ...)."""
    return [path, *(path.with_name(path.name + suffix) for suffix in suffixes)]


def prepare_private_file(path: Path) -> None:
    """Before opening or creating ``path``: its directory exists (0700 if created now), and the file, if it
    exists, is readable by its owner only."""
    make_private_dir(path.parent)
    tighten_files([path])


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Run the block with umask 077, so every file created meanwhile is private to this user.

    The umask belongs to the whole process: the block holds a lock (two blocks never restore each other's
    value) and must stay short; other threads creating files meanwhile only get more private ones.
    """
    if not _POSIX:
        yield
        return
    with _umask_lock:
        previous = os.umask(0o077)
        try:
            yield
        finally:
            os.umask(previous)
