"""The one base class of every user-facing error.

A `UserError` means the input or the order of steps is wrong, not that the code is: its
message names what is wrong and the command or value that fixes it. The CLI turns it into one
red line and exit code 2 (`mmrec.cli_common`); the service into a 4xx answer.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or a missing earlier step; the message says which and how to fix it."""
