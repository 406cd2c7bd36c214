"""The one base class of the errors a user can fix: the driver prints them as one `error:` line."""

import re


class UserError(Exception):
    """Bad input, settings or files the user gave; the message says what is wrong and the fix.

    Every module's user-facing error type derives from it, so the driver catches
    this one class (and nothing here is a bug to show with a traceback).
    """


def first_line(error):
    """The first line of an error's message (TensorFlow's without its {{function_node ...}}
    prefix), at most 200 characters; the error's type name if it has no message."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error)).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
