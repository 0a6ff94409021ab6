"""The sandbox users a grader runs submissions as: one per ``--jobs`` slot, leased on this machine.

Started as root, the grader drops each sandbox to a user of its own (``sandbox.UID_BASE`` onwards), whose
process cap and keyring belong to that one submission. Two graders on one machine must not share those
users, so each user has a lock file here, and a grader holds the locks of its users while it runs.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

from course_lib.grading.sandbox import UID_BASE

USERS = 64  # UID_BASE ... UID_BASE + 63, shared by every grader on the machine through one lock file each
LEASES = Path(tempfile.gettempdir()) / "course-grader-users"


class NoUsers(RuntimeError):
    """Every sandbox user is held by another grader on this machine."""


@contextlib.contextmanager
def leased_users(count: int):
    """Yield ``count`` sandbox users that no other grader on this machine holds, each held by a lock on its
    file until the block ends: two graders at once never share a user's process cap or keyring. Without
    root there are no users to switch to: it yields Nones and each sandbox runs as the caller."""
    if os.geteuid() != 0:
        yield [None] * count
        return
    LEASES.mkdir(mode=0o700, exist_ok=True)
    folder = os.lstat(LEASES)
    if not stat.S_ISDIR(folder.st_mode) or folder.st_uid != 0 or folder.st_mode & 0o022:
        raise NoUsers(f"{LEASES} must be a folder of root's that no one else can write; remove it and grade again")
    held: dict[int, int] = {}  # uid -> the open lock file (not inherited by the sandboxes)
    try:
        for uid in range(UID_BASE, UID_BASE + USERS):
            if len(held) == count:
                break
            fd = os.open(LEASES / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held[uid] = fd
            except BlockingIOError:
                os.close(fd)
        if len(held) < count:
            raise NoUsers(f"other graders on this machine hold {USERS - len(held)} of the {USERS} sandbox "
                               f"users; grade with fewer --jobs or after they finish")
        yield list(held)
    finally:
        for fd in held.values():
            os.close(fd)


def is_leased(uid: int) -> bool:
    """Does a running grader hold this sandbox user (so that its processes are that grader's, not orphans)?"""
    try:
        fd = os.open(LEASES / str(uid), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
