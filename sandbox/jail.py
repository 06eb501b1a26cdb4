"""Linux isolation for the sandbox processes, through libc: namespaces, mounts, rlimits, privileges.

Everything degrades gracefully: a step the kernel or the user refuses is skipped, and `active` records what did
take effect, so `Sandbox().protections` reports the truth for this machine.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36
NOBODY = 65534
WORKDIR = "/tmp/work"  # a fresh tmpfs here for every solution: its working directory, HOME and TMPDIR

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def _bytes(s: str | None) -> bytes | None:
    return s.encode() if s is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = _bytes
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), "prctl")


def limit(kind: int, value: int) -> None:
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass


def isolate_server(shown: list[str], hidden: list[str] = (), allowed: list[str] = ()) -> tuple[list[str], str]:
    """Run once in the fork server: own network, mount and IPC namespaces; a private /tmp; a root that shows only
    what a run needs (build_root). (The protections in effect, what the root shows in words.)"""
    active: list[str] = []
    if os.geteuid() == 0:
        unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
    else:  # an unprivileged user may still own a user namespace, and everything else inside it
        uid, gid = os.geteuid(), os.getegid()
        unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)
        with open("/proc/self/setgroups", "w") as fh:
            fh.write("deny")
        with open("/proc/self/uid_map", "w") as fh:
            fh.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as fh:
            fh.write(f"0 {gid} 1")
        active.append("user_namespace")
    active += ["network_namespace", "mount_namespace", "ipc_namespace"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    needed, hidden, allowed = build_root(shown, hidden, allowed)
    active += ["minimal_root", "read_only_host", "private_tmp", "packages_hidden"]
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    return active, (f"read-only: {', '.join(needed)}; packages: {', '.join(allowed) or 'none'}; covered by an "
                    f"empty directory: {', '.join(hidden) or 'none'}")


SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")


def _inside(path: str, dirs) -> bool:
    return any(path.startswith(d + os.sep) for d in dirs)


def _bind_read_only(fd: int, target: str) -> None:
    os.makedirs(target, mode=0o755, exist_ok=True)
    mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    os.close(fd)


def build_root(shown: list[str], hidden: list[str] = (), allowed: list[str] = (),
               where: str = "/tmp") -> tuple[list[str], list[str], list[str]]:
    """chroot into a fresh tmpfs that holds, read-only, only the system directories and `shown` (sandbox.mounts:
    the standard library, the sandbox's own code); every directory of `hidden` inside those (installed packages) is
    covered by an empty one, and the directories of `allowed` (the packages a run may import) are shown at their
    own paths, wherever they sit. The rest of the host (data sets with their answers, packages that ship them, the
    caller's checkout, home directories) does not exist in there. Directories are reached through O_PATH
    descriptors opened before the tmpfs goes on, since any of them may sit under `where`. Returns the directories
    shown, covered and allowed, as mounted."""
    needed = sorted({os.path.realpath(p) for p in (*SYSTEM_DIRS, *shown) if os.path.exists(p)})
    needed = [p for p in needed if not _inside(p, needed)]  # a directory inside another needed one comes with it
    hidden = sorted({os.path.realpath(p) for p in hidden if os.path.isdir(p)})
    hidden = [p for p in hidden if _inside(p, needed) and not _inside(p, hidden)]
    allowed = sorted({os.path.realpath(p) for p in allowed if os.path.isdir(p)})
    allowed = [p for p in allowed if not _inside(p, needed) or _inside(p, hidden)]  # else in sight already
    handles = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in (*needed, *allowed)}
    devices = {d: os.open(d, os.O_PATH) for d in DEVICES if os.path.exists(d)}
    mount("tmpfs", where, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for d in SYSTEM_DIRS:  # merged-/usr systems: /bin, /lib... are links into /usr; keep them as links
        if os.path.islink(d):
            os.symlink(os.readlink(d), where + d)
    for path in needed:
        _bind_read_only(handles[path], where + path)
    for path in hidden:  # writable until the allowed packages inside have their mount points
        mount("tmpfs", where + path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    for path in allowed:
        _bind_read_only(handles[path], where + path)
    for path in hidden:
        mount(None, where + path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.makedirs(where + "/dev", mode=0o755)
    for dev, fd in devices.items():
        with open(where + dev, "w"):
            pass
        mount(f"/proc/self/fd/{fd}", where + dev, None, MS_BIND)
        os.close(fd)
    for d in ("/proc", WORKDIR, "/var/tmp", "/dev/shm"):
        os.makedirs(where + d, mode=0o755, exist_ok=True)
    mount("proc", where + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(where)
    os.chroot(".")
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_RDONLY, "mode=0755,size=4m")
    return needed, hidden, allowed


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's malloc_trim), once, in the server before it forks
    runs: every page still mapped in the server is a page-table entry each fork copies and each run process's exit
    tears down (about 1 MiB of the server's 12 here, ~5% of a run's CPU). Nothing where the C library has no such
    call."""
    try:
        _libc.malloc_trim(0)
    except AttributeError:
        pass


def new_pid_namespace_for_children(own_pid_ns_fd: int) -> None:
    """The next child is PID 1 of a new namespace; when that child dies, so does everything it started,
    double-forked daemons included. A process may do this once per namespace it is in, so first step back into
    our own (the fd of /proc/self/ns/pid opened at start)."""
    _check(_libc.setns(own_pid_ns_fd, CLONE_NEWPID), "setns")
    unshare(CLONE_NEWPID)


# Each server's runs get their own pair of uids (solution, judge), taken from its host-wide slot (sandbox.run_slot),
# so no two live servers share one, whatever PID namespace each is in: RLIMIT_NPROC counts processes per uid, and
# one run's processes must not starve another's.
RUN_UID_BASE = 1_000_000


def run_uids(slot: int) -> tuple[int, int]:
    uid = RUN_UID_BASE + 2 * slot
    return uid, uid + 1


def is_run_uid(uid: int) -> bool:
    return uid == NOBODY or uid >= RUN_UID_BASE


def shares_mounts() -> bool:
    """Whether any mount here propagates to or from another namespace. The server makes its whole tree private
    before building its root, so normally none does, and a run's new mount namespace (a copy) needs no remount."""
    try:
        with open("/proc/self/mountinfo") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return True
    return any(tag.startswith(("shared:", "master:")) for line in lines for tag in
               line.split(" - ", 1)[0].split()[6:]) or not lines


def confine_run(memory_mb: int, cpu_s: int, file_mb: int, nproc: int, uid: int | None, seccomp=None,
                writable: bool = True, shared_mounts: bool = True) -> None:
    """In a run's process (solution or judge; PID 1 of its own PID namespace): its own /proc, IPC namespace (no
    System V object outlives the run or reaches another), a fresh tmpfs at WORKDIR that vanishes with it (its
    working directory) and, for the solution, one at /dev/shm (the rest of /tmp and /var/tmp is read-only), limits,
    its own uid, no privileges, and the seccomp filter (built once in the server) last."""
    unshare(CLONE_NEWNS | CLONE_NEWIPC)
    if shared_mounts:  # else every copied mount is private already (shares_mounts)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    # writable=False (the judge): the tmpfs is read-only, so tests that write a file for the solution fail at once
    # (EROFS) and run beside it instead, where the file is where the solution looks.
    ro = 0 if writable else MS_RDONLY
    mount("tmpfs", WORKDIR, "tmpfs", MS_NOSUID | MS_NODEV | ro, f"mode=0755,size={4 * file_mb}m{owner}")
    if writable:  # POSIX shared memory and semaphores (multiprocessing's locks), this run's own and gone with it
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={4 * file_mb}m")
    os.setsid()  # its own session and process group: killpg(0) reaches nothing else
    confine(WORKDIR, memory_mb, cpu_s, file_mb, nproc, uid)
    if seccomp is not None:
        seccomp.load()
    # Changing credentials clears the parent-death signal, so it is set here, last: if the server dies (or is
    # killed when the sandbox closes), this process dies too, and its PID namespace with it.
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def confine(workdir: str, memory_mb: int, cpu_s: int, file_mb: int, nproc: int, uid: int | None) -> None:
    os.chdir(workdir)
    limit(resource.RLIMIT_AS, memory_mb * 2**20)
    limit(resource.RLIMIT_CPU, cpu_s)
    limit(resource.RLIMIT_FSIZE, file_mb * 2**20)
    limit(resource.RLIMIT_CORE, 0)
    limit(resource.RLIMIT_NOFILE, 64)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        limit(resource.RLIMIT_NPROC, nproc)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
