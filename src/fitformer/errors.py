"""User-facing errors.

Every error a user can cause (a missing file, a wrong column, a corrupt download) is raised
as :class:`FitformerError` with a one-line message that names the input and the fix. The CLI
prints it without a traceback and exits with status 2; Python callers catch it like any
exception.
"""

from __future__ import annotations


class FitformerError(Exception):
    """An error caused by the user's input or environment, with a message naming the fix."""

    exit_code = 2
