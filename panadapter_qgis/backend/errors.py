"""Errors the backend raises for problems a user can cause (never imports qgis)."""


class PansharpenError(Exception):
    """A problem with the inputs or the run, worded for the user."""


class Cancelled(PansharpenError):
    """The user cancelled the run; any partial output has been removed."""

    def __init__(self, message="The run was cancelled; no output was written."):
        super().__init__(message)


def user_errors(function):
    """Re-raise a PansharpenError as a fresh exception without traceback or chained cause.

    A traceback keeps the frames of the failed call alive, and with them open GDAL datasets. When the
    exception outlives QGIS's GDAL clean-up (a Processing log, a test runner keeping failures), freeing those
    datasets late crashes the interpreter; the message is all the user needs.
    """
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except PansharpenError as exc:
            error = type(exc)(str(exc))
        raise error

    return wrapper
