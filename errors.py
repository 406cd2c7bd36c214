"""The one base class of the errors a user can fix: the driver prints them as one `error:` line."""


class UserError(Exception):
    """Bad input, settings or files the user gave; the message says what is wrong and the fix.

    Every module's user-facing error type derives from it, so the driver catches
    this one class (and nothing here is a bug to show with a traceback).
    """
