"""The one error class of lens_steer.

Every problem a user can fix (a bad language code, a missing model package, stats recorded on another
model...) raises :class:`LensSteerError` with a message that says how to fix it. The CLI turns it into one
line on stderr and exit code 2; library users can catch it like any exception.
"""

from __future__ import annotations


class LensSteerError(Exception):
    """A user-fixable problem. The message is one line that says what to do."""


def check_choice(what: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise the one-line error that lists them.

    >>> check_choice("flores split", "dev", ("dev", "devtest"))
    'dev'
    """
    if value not in choices:
        raise LensSteerError(f"unknown {what} {value!r}; use one of {', '.join(choices)}")
    return value
