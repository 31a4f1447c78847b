"""The errors facesync reports to its user, as a small hierarchy callers can catch by kind.

Every error that reaches the command line is a ``FacesyncError``: the CLI prints its message (never a
traceback) and exits with its ``exit_code``. Errors of the face-library API live in ``api/errors.py``
and derive from ``FacesyncError`` too.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # plan --detailed-exitcode: changes present
EXIT_UNSAFE = 3  # the plan is refused by a safety check; --force overrides
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class FacesyncError(Exception):
    """Base of every error facesync reports; ``hint`` says what the user can do about it."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(FacesyncError):
    """A setting is missing or wrong: target, credentials, cache place, command-line flags."""


class ManifestError(FacesyncError):
    """The manifest is invalid; ``diagnostics`` holds every problem found (see manifest/diagnostics.py)."""

    def __init__(self, message: str, diagnostics: tuple = (), *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.diagnostics = tuple(diagnostics)


class PlanRefusedError(FacesyncError):
    """A safety check refused the plan (delete threshold, protected group); ``--force`` overrides where allowed."""

    exit_code = EXIT_UNSAFE


class UnmatchedFacesError(PlanRefusedError):
    """The plan would replace faces that are probably the manifest's own pictures: this service's ``detect``
    gives images other face_tokens than user/add stored, so facesync cannot match them (``--reupload``
    accepts re-adding them from the manifest's images)."""


class PlanStaleError(FacesyncError):
    """A saved plan no longer fits: its checksum is wrong or the live facts it depends on have moved."""


class LockHeldError(FacesyncError):
    """Another apply holds the library's lock."""


class ApplyFailedError(FacesyncError):
    """Some operations of an apply failed permanently; the report says which and why."""
