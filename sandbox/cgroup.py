"""A cgroup per run: the run's processes (the solution's, the judge, and everything either starts) are bounded
together, in memory (memfds and the files of the run's tmpfs included: the kernel charges them to the cgroup of
the process that wrote them) and in tasks, where rlimits bound each process (RLIMIT_AS) or each uid (RLIMIT_NPROC).

Each fork server makes one cgroup, named by its host-wide slot (sandbox.run_slot), while it still sees the host's
/sys/fs/cgroup, and keeps descriptors of the few files it needs afterwards. A server runs one job at a time and
reaps every process of a run before it answers, so its cgroup holds the current run alone, and is empty when the
next one starts; each run process enters it as its first act after fork, before it runs anything else. One
cgroup made and removed per run would cost about a millisecond of kernel time (measured: 0.7 ms for both v1
hierarchies) on runs that take about 11; entering costs one write per hierarchy and process.

Where the host allows it: cgroup v2 with the memory and pids controllers (the cgroup goes under the nearest
cgroup, ours or an ancestor, that hands both to its children), else cgroup v1 with a memory and a pids hierarchy
(the cgroup goes under the server's own in each). Otherwise `RunCgroup.create` raises Unavailable with the reason.
"""

from __future__ import annotations

import errno
import os
import time

from codealign.sandbox import run_slot

KILL_EVENT = "oom_kill"
# Where the kernel cannot kill a run's processes as one: the run is still ended (the server kills it) and reported
# as past memory_mb, but the rest of it runs on until then.
NO_GROUP_KILL = ("{} no memory.oom.group: past the limit the kernel kills the run's largest process, not all of "
                 "them; the others run on until the server ends the run, which is reported as past memory_mb")


class Unavailable(Exception):
    pass


def _cgroup_mounts() -> list[tuple[str, str, str, list[str]]]:
    """(mount point, root of the mount within its hierarchy, fstype, super options) of every cgroup mount."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            pre, post = line.split(" - ", 1)
            fields, (fstype, _source, options) = pre.split(), post.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                out.append((fields[4], fields[3], fstype, options.split(",")))
    return out


def _own_cgroups() -> dict[str, str]:
    """Controller -> this process's cgroup in that hierarchy; "" is the v2 hierarchy."""
    own = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                own[name] = path
    return own


def _directory(mount_point: str, mount_root: str, path: str) -> str | None:
    """Where the cgroup `path` of a hierarchy is, through a mount of it; None if that mount does not show it."""
    root = mount_root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None
    return os.path.join(mount_point, path[len(root):].lstrip("/"))


def _read_words(path: str) -> set[str]:
    try:
        with open(path) as fh:
            return set(fh.read().split())
    except OSError:
        return set()


def find_parents() -> tuple[int, dict[str, str]]:
    """(cgroup version, controller -> directory under which a run cgroup can go). Raises Unavailable."""
    mounts, own = _cgroup_mounts(), _own_cgroups()
    for point, root, fstype, _ in mounts:
        if fstype != "cgroup2" or "" not in own:
            continue
        here = _directory(point, root, own[""])
        while here is not None:  # a cgroup with processes of its own (ours) hands no controller down: go up
            if {"memory", "pids"} <= _read_words(os.path.join(here, "cgroup.subtree_control")):
                return 2, {"memory": here, "pids": here}
            here = None if os.path.normpath(here) == os.path.normpath(point) else os.path.dirname(here)
    parents = {}
    for controller in ("memory", "pids"):
        for point, root, fstype, options in mounts:
            if fstype == "cgroup" and controller in options and controller in own:
                where = _directory(point, root, own[controller])
                if where is not None:
                    parents[controller] = where
                    break
    if len(parents) == 2:
        return 1, parents
    raise Unavailable("no cgroup v2 hierarchy hands down memory and pids, and no cgroup v1 memory and pids "
                      "hierarchies are mounted")


def _write(path: str, value: str, optional: bool = False) -> bool:
    """Whether the value was written; an optional file the kernel lacks (no swap accounting...) is False."""
    try:
        with open(path, "w") as fh:
            fh.write(value)
    except OSError:
        if not optional:
            raise
        return False
    return True


def remove(dirs: list[str], wait_s: float = 2.0) -> bool:
    """rmdir each cgroup, waiting up to `wait_s` for processes still dying in it. True if none is left."""
    deadline = time.monotonic() + wait_s
    left = [d for d in dirs if os.path.isdir(d)]
    while left:
        for d in list(left):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return False
                continue
            left.remove(d)
        if left:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
    return True


def remove_for_dead_server(dirs: list[str], slot_lock: str) -> None:
    """A dead server's cgroup, once the processes of its last run are gone too (they die with it), under its slot's
    lock: a server that has taken the slot since, and with it the cgroup's name, is left alone."""
    fd = run_slot.try_lock(slot_lock)
    if fd is not None:
        try:
            remove(dirs)
        finally:
            os.close(fd)


class RunCgroup:
    """The cgroup a server's runs enter: one directory in v2, one per hierarchy (memory, pids) in v1."""

    def __init__(self, version: int, dirs: list[str], memory_mb: int, tasks: int, lacks: tuple[str, ...] = ()):
        self.version, self.dirs, self.memory_mb, self.tasks = version, dirs, memory_mb, tasks
        self.lacks = lacks  # what this cgroup does not bound, in words (describe)
        self._procs = [os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC) for d in dirs]
        events = "memory.events" if version == 2 else "memory.oom_control"
        self._events = os.open(os.path.join(dirs[0], events), os.O_RDONLY | os.O_CLOEXEC)
        self._kills = self._kill_count()

    @classmethod
    def create(cls, name: str, memory_mb: int, tasks: int) -> RunCgroup:
        try:
            version, parents = find_parents()
        except (OSError, ValueError) as exc:  # /proc unreadable, or in a shape this code does not know
            raise Unavailable(f"cannot tell where cgroups are: {exc}") from exc
        memory_dir = os.path.join(parents["memory"], name)
        pids_dir = os.path.join(parents["pids"], name)
        dirs = [memory_dir] if memory_dir == pids_dir else [memory_dir, pids_dir]
        try:
            # one left by a server of this slot that died with its caller: empty (its runs died with it)
            remove(dirs, wait_s=0.5)
            for d in dirs:
                os.mkdir(d, 0o755)
            limit = str(memory_mb * 2**20)
            lacks = []
            if version == 2:
                _write(os.path.join(memory_dir, "memory.max"), limit)
                no_swap = _write(os.path.join(memory_dir, "memory.swap.max"), "0", optional=True)
                if not _write(os.path.join(memory_dir, "memory.oom.group"), "1", optional=True):  # one killed: all
                    lacks.append(NO_GROUP_KILL.format("this kernel's cgroup v2 has"))
            else:
                _write(os.path.join(memory_dir, "memory.limit_in_bytes"), limit)
                no_swap = _write(os.path.join(memory_dir, "memory.memsw.limit_in_bytes"), limit, optional=True)
                lacks.append(NO_GROUP_KILL.format("cgroup v1 has"))
            if not no_swap:
                lacks.append("no swap limit (the kernel accounts no swap here): a run may also swap out up to what "
                             "the host's swap holds")
            _write(os.path.join(pids_dir, "pids.max"), str(tasks))
            return cls(version, dirs, memory_mb, tasks, tuple(lacks))
        except OSError as exc:
            remove(dirs, wait_s=0)
            raise Unavailable(f"cannot make a cgroup in {parents['memory']}: {exc.strerror or exc}") from exc

    def enter(self) -> None:
        """In a freshly forked run process, first of all: it and everything it starts belong to the run cgroup.
        Raises OSError if the kernel refuses; the process must then run nothing."""
        for fd in self._procs:
            os.write(fd, b"0")

    def _kill_count(self) -> int:
        for line in os.pread(self._events, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == KILL_EVENT:
                return int(value)
        return 0

    def kills_since_last(self) -> int:
        """Processes the kernel killed for the memory limit since the last call (the previous run)."""
        now = self._kill_count()
        new, self._kills = now - self._kills, now
        return new

    def describe(self) -> str:
        group = "" if self.version == 1 or any("oom.group" in x for x in self.lacks) else \
            "; past the limit every process of the run is killed (memory.oom.group)"
        return (f"cgroup v{self.version} per run: {self.memory_mb} MiB and {self.tasks} tasks for all of a run's "
                f"processes together, memfds and files included ({', '.join(self.dirs)}){group}"
                + "".join(f"; {x}" for x in self.lacks))
