"""Atomic file writing: a reader never sees a half-written file.

Each writer writes to a temporary file in the destination's directory and
renames it over the destination, so an interrupted write leaves the previous
file (or nothing) in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datapruning.errors import DataPruningError


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DataPruningError(
            f"output directory {str(parent)!r} does not exist; create it or choose another --out"
        )
    if path.is_dir():
        raise DataPruningError(f"output path {str(path)!r} is a directory; give a file name")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file private (0600); give it the usual umask mode.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_once(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> bool:
    """Like :func:`atomic_write`, but the first writer wins: an existing ``path`` is kept.

    Workers that may compute the same file at once (scoring shards training the
    same seed group) all read back the one that landed first, so none of them
    goes on with a copy that differs from the others' in its last bits. Returns
    whether this call wrote the file.
    """
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())
        try:
            os.link(tmp_path, path)  # fails if path exists: an atomic create-if-absent
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: check, then rename
            if path.exists():
                return False
            os.replace(tmp_path, path)
        return True
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_npy(path: str | os.PathLike[str], array: Any) -> Path:
    # np.save appends ".npy" to a path without it, so write through a file object.
    import numpy as np

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.save(handle, array)

    return atomic_write(path, save)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_indices(path: str | os.PathLike[str]) -> Any:
    """The array in a .npy file of indices (as written by `datapruning select`)."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise DataPruningError(f"indices file {str(path)!r} not found")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # EOFError: an empty file
        raise DataPruningError(f"{str(path)!r} is not a .npy array of indices") from None


def cache_dir() -> Path:
    """Where files the project can remake are kept ($DATAPRUNING_CACHE_DIR, else XDG's cache)."""
    root = os.environ.get("DATAPRUNING_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "datapruning"


# Bump when what cached_arrays stores changes shape.
ARRAY_CACHE_VERSION = 1


def cached_arrays(
    kind: str, key: dict[str, Any], make: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``make()``'s arrays, kept in the cache under a hash of ``key`` and read back next time.

    For data that is slow to make and cheap to read (MNIST-1D's generator takes
    seconds for a few thousand examples; every process of a fan-out would
    otherwise pay it again). A missing, unreadable or foreign file is remade; a
    cache that cannot be written is skipped, since the arrays are in hand anyway.
    """
    import zipfile

    import numpy as np

    identity = json.dumps({"version": ARRAY_CACHE_VERSION, **key}, sort_keys=True, default=str)
    path = cache_dir() / kind / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.npz"
    try:
        with np.load(path, allow_pickle=False) as held:
            if str(held["__key__"]) == identity:
                return {name: held[name] for name in held.files if name != "__key__"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # absent, truncated or foreign: make it again
    arrays = make()

    def save(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, __key__=np.array(identity), **arrays)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, save)
    except (OSError, DataPruningError):
        pass  # a read-only or full cache costs only the time to make the arrays again
    return arrays


def file_hash(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of a file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def check_format_version(path: str | os.PathLike[str], found: Any, reads: int, fix: str) -> None:
    """Refuse a file whose ``format_version`` is not ``reads``, the one this release reads.

    ``fix`` says what to do about a file of another version (e.g. "delete it to
    start the run over"); a newer version also suggests upgrading.
    """
    if isinstance(found, int) and not isinstance(found, bool) and found == reads:
        return
    if found is None:
        why = f"has no format version (an older datapruning wrote it; this one reads {reads})"
    elif isinstance(found, int) and not isinstance(found, bool) and found < reads:
        why = f"has format version {found}, older than the {reads} this datapruning reads"
    elif isinstance(found, int) and not isinstance(found, bool):
        why = f"has format version {found}, newer than the {reads} this datapruning reads"
        fix = f"upgrade datapruning, or {fix}"
    else:
        why = f"has unknown format version {found!r} (this datapruning reads {reads})"
    raise DataPruningError(f"{str(path)!r} {why}; {fix}")


def remove_stale_temporaries(directory: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Delete the temporaries of ``names`` that a writer killed mid-write left in ``directory``.

    :func:`atomic_path` removes its temporary on any exception, but a SIGKILL
    leaves it (``.NAME.XXXXXXXX.tmp``, as large as the file, e.g. a resume
    checkpoint). Only for files no other process is writing at the same time.
    """
    for name in names:
        for path in Path(directory).glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
