"""The one error class of lens_steer.

Every problem a user can fix (a bad language code, a missing model package, stats recorded on another
model...) raises :class:`LensSteerError` with a message that says how to fix it. The CLI turns it into one
line on stderr and exit code 2; library users can catch it like any exception.
"""

from __future__ import annotations


class LensSteerError(Exception):
    """A user-fixable problem. The message is one line that says what to do."""
