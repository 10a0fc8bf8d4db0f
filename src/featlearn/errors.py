"""Errors a user can fix: the command line reports them as one message with exit status 2.

Anything else is a bug and keeps its traceback (see :func:`featlearn.cli.main`).
"""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """A problem with what the user gave (a configuration, settings or an input file)."""


class ConfigError(UserError, ValueError):
    """A configuration that breaks the schema or the project's rules; lists every problem.

    Each problem names its dotted field, e.g. ``experiments.grid.parameters.width: ...``.
    """

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"invalid configuration: {self.problems[0]}")
        else:
            super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class InputError(UserError, ValueError):
    """An input file or settings argument that a stage cannot use (missing, of another kind, malformed)."""


class CheckError(UserError):
    """A result that fails a check the configuration asks for (e.g. ``phases.strict``)."""
