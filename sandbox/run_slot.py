"""A slot per fork server, unique on the host: it names the server's run cgroup and picks its run uids.

A slot is a lock file, /run/codealign-sandbox/<n>.lock, held with flock by the server for as long as it lives (the
kernel drops the lock when the server dies, however it dies). A new server takes the lowest slot nobody holds, so
two live servers never share one, whatever PID namespace each runs in, and the files stay as many as the most
servers that ever ran at once. Unique among every sandbox that sees the same lock directory: one host, or
containers that mount the host's /run/codealign-sandbox (containers that share the host's uids but not that
directory can collide).

The run processes never hold the lock's descriptor (they close every descriptor they do not need before running
anything), so no run can release its server's slot.
"""

from __future__ import annotations

import errno
import fcntl
import os

MAX_SLOTS = 1 << 16


def lock_dir() -> str:
    # root: the host-wide /run; an unprivileged user gets no per-run uids, only needs unique cgroup names among its
    # own sandboxes (its delegated cgroups are its own)
    return "/run/codealign-sandbox" if os.geteuid() == 0 else f"/tmp/codealign-sandbox-{os.geteuid()}"


def lock_path(slot: int) -> str:
    return os.path.join(lock_dir(), f"{slot}.lock")


def acquire() -> tuple[int, int]:
    """(slot, the descriptor holding its lock). Raises OSError if the lock directory cannot be used."""
    os.makedirs(lock_dir(), mode=0o700, exist_ok=True)
    for slot in range(MAX_SLOTS):
        fd = try_lock(lock_path(slot))
        if fd is not None:
            return slot, fd
    raise OSError(errno.EAGAIN, f"all {MAX_SLOTS} sandbox slots are held")


def try_lock(path: str) -> int | None:
    """The descriptor of `path`, locked; None if someone else holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
