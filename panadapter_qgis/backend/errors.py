"""Errors the backend raises for problems a user can cause (never imports qgis)."""


class PansharpenError(Exception):
    """A problem with the inputs or the run, worded for the user."""


class Cancelled(PansharpenError):
    """The user cancelled the run; any partial output has been removed."""

    def __init__(self, message="The run was cancelled; no output was written."):
        super().__init__(message)
