"""Files that survive kills and stay readable: atomic writes, atomic cache folders, quarantine.

Every file transferbench writes goes through here:

* written to a temporary file beside its target, fsynced and renamed, so a reader (or a run
  killed half-way) sees the old file or the new one, never a mix;
* with the permissions the umask gives, as ordinary tools do (``mkstemp`` alone would make
  every result private to its owner);
* never deleted when damaged: a file that fails validation is moved aside, next to where it
  was, under ``damaged/`` with the time it was found, and recomputed.

:func:`cached_dir` builds a cache folder (decoded images, generated data) once, under a lock,
and removes the temporary folders of builds that were killed. It is public API for plugins.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_copy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "cached_dir",
    "clean_stale_temp",
    "quarantine",
    "sha256_file",
]

#: Temporary files and folders are named ``.<target>.<random><TMP_SUFFIX>``.
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _readable(path: str | Path, directory: bool = False) -> None:
    """Give a fresh temporary file (0600) or folder (0700) the umask's permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a mix."""
    with atomic_target(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """:func:`atomic_write_bytes` of indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (safetensors);
    renamed onto ``path`` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (readers never see half of ``dst``)."""
    with atomic_target(dst) as tmp:
        shutil.copyfile(src, tmp)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def quarantine(path: Path, root: Path) -> Path:
    """Move a damaged file or folder under ``root/damaged/`` (keeping its path relative to
    ``root`` and adding the time), never deleting it. Returns where it went."""
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = root / "damaged" / rel.parent / f"{rel.name}.{stamp}"
    n = 1
    while dest.exists():
        dest = dest.with_name(f"{rel.name}.{stamp}-{n}")
        n += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def clean_stale_temp(folder: Path, prefix: str = ".") -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by writers that were killed.

    Call it only while holding the lock that every writer of ``folder`` holds (a run's lock,
    a cache entry's lock): then no temporary there belongs to a live writer.
    """
    removed: list[Path] = []
    if not Path(folder).is_dir():
        return removed
    for entry in Path(folder).iterdir():
        if entry.name.startswith(prefix) and entry.name.endswith(TMP_SUFFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[int]:
    """An exclusive ``flock`` on ``path`` (created if needed); released by the kernel if the
    process dies, so a killed holder never leaves a stale lock. Yields the descriptor.

    Raises:
        BlockingIOError: ``blocking=False`` and another process holds the lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        yield fd
    finally:
        os.close(fd)


def cached_dir(target: Path, build: Callable[[Path], None], *, valid: Callable[[Path], bool]) -> Path:
    """The cache folder ``target``, built once.

    ``build(tmp)`` fills a temporary folder beside ``target``, which is then renamed into
    place, so no reader ever sees half a cache. Builders of the same ``target`` (in any
    process) take turns on a lock, and the one holding it removes temporary folders of
    builds that were killed. A ``target`` that exists but fails ``valid(target)`` is moved
    aside under ``<parent>/damaged/`` (never deleted) and built again. Folder and files
    follow the umask.

    Raises:
        OSError: the cache folder cannot be written.
    """
    target = Path(target)
    if valid(target):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    with file_lock(parent / f".{target.name}.lock"):
        if valid(target):  # another process built it while we waited
            return target
        clean_stale_temp(parent, prefix=f".{target.name}.")
        if target.exists():
            quarantine(target, parent)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX))
        try:
            build(tmp)
            for dirpath, _, filenames in os.walk(tmp):
                _readable(dirpath, directory=True)
                for name in filenames:
                    _readable(Path(dirpath) / name)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
