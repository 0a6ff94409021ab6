"""Limits the kernel holds for a whole sandbox: a control group per run, and emptied keyrings.

Per-process caps (``RLIMIT_DATA``) miss shared memory (``memfd``, ``/dev/shm``, tmpfs), and a
signal handler or many children can outrun a per-process view; a cgroup counts the whole run. The
kernel keeps a user's keyring past the user's processes, so a sandbox user's keyrings are emptied
between runs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CGROUPS = Path("/sys/fs/cgroup")


class Cgroup:
    """One run's control group: memory with shared memory and tmpfs included, processes, one core of CPU.

    cgroup v2 where its memory controller is on, else v1's memory, pids and cpu hierarchies; ``None``
    from :meth:`make` where neither is writable (then only the runner's per-process limits hold).
    """

    def __init__(self, folders: list[Path]):
        self.folders = folders

    @classmethod
    def make(cls, name: str, memory_mb: int, processes: int) -> "Cgroup | None":
        memory, v2 = str(memory_mb << 20), CGROUPS / "cgroup.controllers"
        if v2.exists() and "memory" in v2.read_text().split():
            plan = [(CGROUPS / name, {"memory.max": memory, "memory.swap.max": "0", "pids.max": str(processes),
                                      "cpu.max": "100000 100000"})]
        else:
            plan = [(CGROUPS / "memory" / name, {"memory.limit_in_bytes": memory,
                                                 "memory.memsw.limit_in_bytes": memory}),
                    (CGROUPS / "pids" / name, {"pids.max": str(processes)}),
                    (CGROUPS / "cpu" / name, {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"})]
        made = cls([])
        try:
            for folder, settings in plan:
                folder.mkdir()
                made.folders.append(folder)
                for key, value in settings.items():
                    if (folder / key).exists() or key.startswith("memory.limit"):
                        (folder / key).write_text(value)
        except OSError:
            made.remove()
            return None
        return made

    def command(self, args: list[str]) -> list[str]:
        """``args`` started inside the group: a shell joins it, then becomes the command."""
        join = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
        return ["/bin/sh", "-c", join, "sh", *[str(f / "cgroup.procs") for f in self.folders], "--", *args]

    def remove(self) -> None:
        """Kill whatever is left in the group, then remove it."""
        for folder in self.folders:
            for _ in range(50):
                try:
                    for pid in (folder / "cgroup.procs").read_text().split():
                        _kill(int(pid))
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


_CLEAR_KEYRINGS = """import ctypes, os, sys
uid, number = int(sys.argv[1]), {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)  # keyctl(2)
os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)
for ring in (-4, -5) if number else ():  # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING: KEYCTL_CLEAR
    ctypes.CDLL(None).syscall(number, 7, ring)
"""


def clear_keyrings(uid: int) -> None:
    """Empty the user keyrings of a sandbox user: the kernel keeps them past the run, for the next one."""
    subprocess.run([sys.executable, "-S", "-c", _CLEAR_KEYRINGS, str(uid)], timeout=30, check=False)


def available(memory_mb: int) -> bool:
    """Whether this machine lets the grader make a control group (root, a writable hierarchy)."""
    probe = Cgroup.make(f"course-grading-{os.getpid()}-probe", memory_mb, 8) if os.geteuid() == 0 else None
    if probe:
        probe.remove()
    return probe is not None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
