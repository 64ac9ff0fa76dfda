"""The project's error types for input a user can fix (data, config, genotype, upstream files).

Raised anywhere; the stage entry points (``pipeline.stage.run_stage``) print the message of
a :class:`UserError` as one line on stderr and exit 1, so it must name the file or key,
the problem and the fix. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix; the message names it, what is wrong and what to do."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file is missing; the message names it and what writes it."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""
