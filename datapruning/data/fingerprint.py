"""One fingerprint per training set, whatever stores it, and the check every reader makes.

Scores, checkpoints, cached teacher logits and betons record the fingerprint of
the training set they were made from, and refuse another one. The fingerprint
hashes what a model sees, not how it is stored: every input as the float32
value it has in a batch (uint8 pixels as ``p / 255``, one correctly rounded
float32 division, as :mod:`datapruning.data.stream` makes them), the example
shape, the count and the int64 labels. An image set held as uint8, as float32
multiples of 1/255, in a beton, an image folder or in memory therefore has one
fingerprint. It is computed in one pass over the examples in chunks (bounded
memory); sources backed by files cache it (beton sidecar, or the cache
directory keyed by the files' paths, sizes and mtimes).

Fingerprints carry their version as a prefix, ``v2:<16 hex digits>``. Version
1 (no prefix) hashed the float32 arrays with their numpy dtype string, so a
uint8 copy of a set hashed differently; files stamped with it are refused by
:func:`check_fingerprint` with the command that redoes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from datapruning.errors import DataPruningError, FingerprintMismatchError

VERSION = "v2"
PREFIX = VERSION + ":"
# Rows per hashing chunk: 4096 CIFAR images are 48 MiB as float32.
CHUNK = 4096


def canonical(rows: np.ndarray) -> np.ndarray:
    """Rows as the float32 values a batch holds (uint8 pixels -> p / 255)."""
    if rows.dtype == np.uint8:
        out = np.empty(rows.shape, dtype=np.float32)
        np.divide(rows, np.float32(255), out=out, dtype=np.float32)
        return out
    return np.ascontiguousarray(rows, dtype=np.float32)


def fingerprint_chunks(
    chunks: Iterable[np.ndarray], labels: np.ndarray, example_shape: tuple[int, ...]
) -> str:
    """The fingerprint of a training set given as consecutive chunks of its inputs."""
    digest = hashlib.blake2b(digest_size=8)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    digest.update(f"{VERSION}|{len(labels)}|{tuple(int(d) for d in example_shape)}".encode())
    count = 0
    for chunk in chunks:
        digest.update(canonical(chunk).tobytes())
        count += len(chunk)
    if count != len(labels):
        raise DataPruningError(f"the inputs have {count} rows but there are {len(labels)} labels")
    digest.update(labels.tobytes())
    return PREFIX + digest.hexdigest()


def fingerprint_arrays(x: np.ndarray, y: np.ndarray) -> str:
    """The fingerprint of in-memory inputs ``x`` (N, ...) and labels ``y``."""
    x = np.asarray(x)
    chunks = (x[start : start + CHUNK] for start in range(0, len(x), CHUNK))
    return fingerprint_chunks(chunks, np.asarray(y), tuple(x.shape[1:]))


def is_current(fingerprint: object) -> bool:
    return isinstance(fingerprint, str) and fingerprint.startswith(PREFIX)


def check_current(found: object, what: str, redo: str) -> None:
    """Refuse ``what`` when it is stamped with a fingerprint of an older version.

    ``redo`` says how to make it again (``re-run `datapruning score```, ...).
    """
    if found is not None and not is_current(found):
        raise FingerprintMismatchError(
            f"{what} carries an old-style dataset fingerprint ({found}) from before "
            f"fingerprint {VERSION}; {redo}"
        )


def check_fingerprint(found: object, expected: str, what: str, redo: str) -> None:
    """Refuse ``what`` unless it was made from the training set ``expected``
    (:func:`check_current` first, so an old file gets the advice that fits it)."""
    check_current(found, what, redo)
    if found != expected:
        raise FingerprintMismatchError(
            f"{what} belongs to dataset {found}, not to this one ({expected}); {redo}"
        )
