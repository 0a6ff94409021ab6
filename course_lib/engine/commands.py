"""What every command line of the course shares: bad input is answered in one line, with exit status 2.

``python -m course_lib.train | evaluate | sample | compress | decompress`` run their work through
:func:`run_command`: an error the user can fix (a wrong file, a wrong kind of checkpoint, a setting the
model lacks) prints ``error: ...`` on one line of stderr, saying what was expected and what to run
instead, and the command exits with status 2, as argparse does for bad arguments. A traceback is kept
for bugs.
"""
from __future__ import annotations

import sys
from typing import Callable

USAGE = 2  # the exit status of a command given bad input (argparse's too)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)  # CheckpointError is a ValueError


def one_line(error: BaseException) -> str:
    """The error's message on one line (tracebacks of nested errors and extra lines left out)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def run_command(work: Callable[[], int | None], errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``work``; a user error (``USER_ERRORS`` or ``errors``) becomes one line on stderr and exit 2."""
    try:
        return work() or 0
    except USER_ERRORS + tuple(errors) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return USAGE
