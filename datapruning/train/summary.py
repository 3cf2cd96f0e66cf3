"""``summary.json``: the record of a finished run, and its format version.

The training loop writes it last (after ``checkpoint.pt``), so its presence
marks a finished run; the report, relative targets (``train.reference``) and
the orchestration's reuse read it back. ``format_version`` says which layout
it has; a reader refuses another version with a message naming the file and
the version, rather than failing later on a missing or renamed field.

Format versions: 1 is the first recorded one; 2 records ``config.train.sparsity``
with only its algorithm's fields (gradual magnitude, one-shot N:M or dynamic
N:M). Files written before 1 carry no version; every other version is refused
(the run is trained again, or its directory removed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datapruning._io import check_format_version

SUMMARY_NAME = "summary.json"
# The layout of summary.json; bump it when a field changes meaning or goes away.
SUMMARY_FORMAT = 2


def check_summary_format(path: str | os.PathLike[str], summary: dict[str, Any]) -> None:
    """Refuse a summary (read from ``path``) of another format version than this release's."""
    check_format_version(
        Path(path),
        summary.get("format_version"),
        SUMMARY_FORMAT,
        "train the run again with this datapruning, or remove its directory",
    )
