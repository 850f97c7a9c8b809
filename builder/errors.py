"""User-facing errors of the build (STYLE.md habit 5): message, context, hint and a kebab-case reference.

Only builder/cli.py turns these into output and exit codes. grammar's DockerfileSyntaxError and cache's
StoreError cannot subclass PybuildError (dependency rule), so cli.py renders them too.
"""
from __future__ import annotations

import re

_REFERENCE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class PybuildError(Exception):
    """An error the user can act on. `context` is extra lines (e.g. the Dockerfile excerpt)."""

    reference = "pybuild-error"

    def __init__(self, message: str, *, context: str | None = None, hint: str | None = None,
                 reference: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.context = context
        self.hint = hint
        if reference is not None:
            self.reference = reference
        assert _REFERENCE.match(self.reference), self.reference
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class BuildStepError(PybuildError):
    """A step failed: carries the instruction location and the tail of its output."""

    reference = "step-failed"


class ContextError(PybuildError):
    """A source path is missing or would leave the build context."""

    reference = "copy-outside-context"


class ImageNotFoundError(PybuildError):
    reference = "image-not-found"


class UsageError(PybuildError):
    reference = "usage"


class BuildCancelled(PybuildError):
    reference = "build-cancelled"

    def __init__(self, message: str = "build cancelled") -> None:
        super().__init__(message, exit_code=130)
