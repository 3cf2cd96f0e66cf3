"""The one exception type users can cause, and its subclasses.

Every error a user can trigger with bad input (a name, a value, a file) is a
``DataPruningError`` whose message says what to change. The CLI prints it on one
line and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic stays out of imports that only raise (datapruning.kernels)
    from pydantic import ValidationError


class DataPruningError(Exception):
    """Bad input that the user can fix; the message says how."""


class ConfigError(DataPruningError):
    """A config file or value that is missing, malformed or out of range."""


class UnknownNameError(DataPruningError):
    """A name (dataset, model, metric, strategy) that is not registered."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]) -> None:
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.choices)}")


class FingerprintMismatchError(DataPruningError):
    """Scores (or a checkpoint) that belong to a different dataset."""


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``where: what`` on one line."""
    err = exc.errors()[0]
    # A discriminated union's tag (train.sparsity's "<gmp>") is no key the user wrote.
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("<"))]
    where = ".".join(str(part) for part in loc) or "value"
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    message = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    # Name the value given, unless the message already does (our own validators' do).
    if isinstance(given, str | int | float) and repr(given) not in message:
        message += f", got {given!r}"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}"


class Interrupted(BaseException):
    """A job stopped by SIGINT or SIGTERM after saving what it can resume from.

    A BaseException, like KeyboardInterrupt, so that code catching ``Exception``
    (retries, per-cell failure records) lets it through; the CLI prints it on one
    line with the command that continues the job and exits with ``exit_code``
    (128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, as a shell reports
    a process ended by that signal).
    """

    def __init__(self, signum: int, detail: str) -> None:
        self.signum, self.detail = signum, detail
        super().__init__(detail)

    @property
    def signal_name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
