"""An unexpected error (a bug) as one line, its traceback in a log file of its own.

The CLI (:func:`datapruning.cli.main`) and each process of a pipeline cell's run on
several processes (:mod:`datapruning.train.job`) report one this way.
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path


def crash_line(exc: BaseException, command: str, name: str) -> str:
    """Write ``exc``'s traceback to a log and return the one line that names it.

    ``command`` is what ran (recorded in the log), ``name`` what the line calls it. The
    log goes to ``<cache>/logs/`` (``$DATAPRUNING_CACHE_DIR``, else
    ``~/.cache/datapruning``), one file per crash, never into a run's own output; if
    that folder cannot be written, to the system's temporary folder; if neither can, the
    traceback goes to stderr here.
    """
    from datapruning import __version__
    from datapruning._io import cache_dir

    now = datetime.datetime.now(datetime.timezone.utc)
    text = (
        f"datapruning {__version__}, Python {sys.version.split()[0]}, {now.isoformat()}\n"
        f"command: {command}\n\n" + "".join(traceback.format_exception(exc))
    )
    file = f"crash-{now:%Y%m%d-%H%M%S}-{os.getpid()}.log"
    log = None
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir()) / "datapruning-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / file).write_text(text)
        except OSError:
            continue
        log = folder / file
        break
    if log is None:
        print(text, file=sys.stderr)
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    where = f"full traceback in {log}" if log is not None else "traceback above"
    return (
        f"unexpected {type(exc).__name__} in `{name}`"
        + (f": {detail}" if detail else "")
        + f" ({where}); this is a bug in datapruning, please report it with that file"
    )
