"""Writing outputs so that nothing half-done is left behind and nothing is lost: the one writer every command uses.

- :func:`check_writable` runs BEFORE any long work: the target must not exist (unless ``overwrite``), must not be
  one of the inputs, its folder must exist or be creatable and be writable, and there must be room for it.
- :func:`atomic` is a context manager yielding a hidden temporary path beside the target (a file, or a folder for
  frame sequences). When the block succeeds the temporary is published under the target's name: created
  EXCLUSIVELY (a hard link for files, a rename that fails on a non-empty folder), so of two runs writing the same
  new output only the first succeeds, the second gets an :class:`~i2v.errors.OutputExistsError`; with
  ``overwrite`` it replaces the target atomically. When the block fails (an error, Ctrl-C, or SIGTERM -- the CLI
  turns it into an exception) the temporary is removed. Published outputs get the permissions the user's umask
  gives new files (temporary files are created 0600 by the OS; that would otherwise stick).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError, OutputExistsError

MIN_FREE_BYTES = 64 * 2**20  # refuse to start when the output's file system has less than this free


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path, overwrite: bool = False, inputs=(), need_bytes: int = 0, flag: str = "-o") -> Path:
    """Fail now, not after an hour of sampling: ``path`` exists (without ``overwrite``), is an input, or cannot be
    written (folder missing and not creatable, read-only, or full). Returns the path."""
    path = Path(path)
    for i in inputs:
        if i is not None and Path(i).exists() and path.resolve() == Path(i).resolve():
            raise InputError(f"{flag} {path} is an input; write to another path (inputs are never overwritten)")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    parent = path.resolve().parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: the folder {existing} is not writable (choose another output folder)")
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        free = None
    if free is not None and free < max(MIN_FREE_BYTES, need_bytes):
        need = f" (this output needs about {need_bytes / 2**20:.0f} MiB)" if need_bytes else ""
        raise InputError(f"cannot write {path}: only {free / 2**20:.0f} MiB free on that disk{need}; free some space "
                         "or write elsewhere")
    return path


def _publish_file(tmp: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if the target appeared meanwhile: exclusive creation
    except FileExistsError:
        raise OutputExistsError(f"{path} was created by someone else while this ran; nothing was replaced (pass "
                                "--overwrite to replace it)") from None
    except OSError:  # file systems without hard links: the check, then a rename
        if path.exists():
            raise OutputExistsError(f"{path} exists; pass --overwrite to replace it") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def _publish_folder(tmp: Path, path: Path, overwrite: bool) -> None:
    if path.exists():
        if not overwrite:
            raise OutputExistsError(f"{path} was created by someone else while this ran; nothing was replaced")
        import tempfile

        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
        os.replace(path, old / path.name)  # move the old output aside, then the new one in, then drop the old
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, path)  # onto a non-empty folder this fails: nothing of another run is replaced
    except OSError:
        raise OutputExistsError(f"{path} was created by someone else while this ran; nothing was replaced") from None


@contextmanager
def atomic(path, overwrite: bool = False, folder: bool = False):
    """Yield a temporary path beside ``path``; publish it as ``path`` when the block succeeds, remove it when it fails."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        mask = _umask()
        if folder:
            os.chmod(tmp, 0o777 & ~mask)
            for f in tmp.iterdir():
                os.chmod(f, 0o666 & ~mask)
            _publish_folder(tmp, path, overwrite)
        else:
            os.chmod(tmp, 0o666 & ~mask)
            _publish_file(tmp, path, overwrite)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
