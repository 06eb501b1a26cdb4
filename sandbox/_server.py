"""The sandbox fork server. Trusted code only: it never runs, compiles or even reads model code or tests.

    python -I -B _server.py PROJECT_ROOT OPTIONS_JSON CONTROL_FD

Per job the caller sends, over the control socket, a header and three descriptors: the solution's source and the
tests (sealed memfds) and the write end of a fresh verdict pipe. The server forks, each as PID 1 of a new PID
namespace, with its own mount and IPC namespaces, uid, rlimits and seccomp filter:
- the solution's process (sandbox.solution_side), given the solution's source only: it runs the program, then
  serves calls with plain values;
- a fresh judge (sandbox.judge_process), given both sources, the two pipe ends that reach the solution and the
  verdict pipe: it decides how to judge from the sources alone, runs the tests, and writes the verdict to the
  caller directly, so neither the tests nor the verdict's detail ever pass through the server.
The server owns the clock: when the judge says its verdict is written, or at the run's deadline, it kills both (and
with them everything they started), reaps them, and answers the caller with the run's mode and how the processes
ended. Nothing outlives the job.
"""

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time

# What solutions commonly import, loaded once and shared by every fork. Kept short on purpose: a larger server
# makes every fork dearer, and anything else still imports (the interpreter's files are readable).
PRELOAD = (
    "array bisect cmath collections copy datetime decimal fractions functools hashlib heapq itertools math "
    "operator random re statistics string struct time typing ast"
).split()
MODES = ("split", "in_process", "")
RUN_CGROUP = None  # sandbox.cgroup.RunCgroup, where the host allows one


def fork_run_process(own_pid_ns: int, body) -> int:
    """Fork `body()` as PID 1 of a new PID namespace: when it dies, everything it started dies with it."""
    jail.new_pid_namespace_for_children(own_pid_ns)
    pid = os.fork()
    if pid == 0:
        try:
            if RUN_CGROUP is not None:  # before anything else: whatever this process starts is the run's
                RUN_CGROUP.enter()
            body()
        finally:
            os._exit(0)
    return pid


def fork_solution(source_fd: int, opts: dict, cpu_s: int, own_pid_ns: int,
                  pipes: tuple[int, int, int, int] | None = None) -> tuple[int, int, int]:
    """The solution's process. `pipes`: (requests r, requests w, replies r, replies w), made here if not given.
    Returns (pid, requests write end, replies read end): the judge's ends, still open here."""
    req_r, req_w, rep_r, rep_w = pipes if pipes is not None else (*os.pipe(), *os.pipe())

    def body():
        solution_side.solution_process(source_fd, req_r, rep_w, {**opts, "cpu_s": cpu_s}, FILTER)

    pid = fork_run_process(own_pid_ns, body)
    os.close(req_r)
    os.close(rep_w)
    return pid, req_w, rep_r


def run_job(job: dict, fds: list[int], opts: dict, own_pid_ns: int) -> tuple[dict, list[int]]:
    """(the run's account for the caller, the run's processes: killed already, to be reaped before it is sent)."""
    source_fd, tests_fd, verdict_fd = fds
    timeout = float(job["timeout"])
    deadline = time.monotonic() + timeout
    cpu_s = int(timeout) + 1  # the CPU limit follows this run's timeout, not the constructor's
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # The judge first: it has more to do before it needs the solution (compiling, planning) than the solution has
    # before it can answer (loading the program).
    run_fds = [theirs.fileno(), source_fd, tests_fd, verdict_fd, req_w, rep_r]
    judge_pid = fork_run_process(own_pid_ns, lambda: judge_process.judge_process(
        run_fds, {**opts, "cpu_s": cpu_s, "refuse": bool(job.get("refuse"))}, FILTER))
    theirs.close()
    for fd in (tests_fd, verdict_fd, req_w, rep_r):  # the solution's process is forked without the tests' fd
        os.close(fd)
    solutions = [fork_solution(source_fd, opts, cpu_s, own_pid_ns, (req_r, -1, -1, rep_w))]
    judge_done = os.pidfd_open(judge_pid)
    mode, timed_out, respawned, died = None, False, False, False
    watch = [mine, judge_done]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select(watch, [], [], left)
        if mine not in ready and judge_done in ready:  # what it said before it ended is read first
            break
        if mine in ready:
            try:
                msg = json.loads(mine.recv(512) or b"null")
            except (OSError, ValueError):
                msg = None
            if not isinstance(msg, dict):  # the judge closed its end (or sent garbage): only wait for its exit
                watch = [judge_done]
                continue
            if msg.get("op") == "done":  # its verdict is written: it is ending, and is killed and reaped below
                break
            if msg.get("op") == "died":  # the judge saw the solution's process end: find out how, below
                died = True
            elif msg.get("op") == "mode" and mode is None and msg.get("mode") in MODES:
                mode = msg["mode"]  # the first announcement stands: it is made before any test runs
            elif msg.get("op") == "respawn" and not respawned:
                # Tests the split judge could not run (a non-plain argument) run again beside the solution, in a
                # fresh process that has served no calls; on the same clock.
                respawned, mode = True, "in_process"
                if not msg.get("fork", True):
                    continue
                _reap(_stop(solutions[-1][0])[1])
                solutions.append(fork_solution(source_fd, opts, cpu_s, own_pid_ns))
                _, requests, replies = solutions[-1]
                try:
                    socket.send_fds(mine, [b"{}"], [requests, replies])
                except OSError:
                    pass
                os.close(requests)
                os.close(replies)
    # The judge first: a judge still running must not see the solution end and judge that.
    judge_signal, judge_pid = _stop(judge_pid)
    for pid, *_ in solutions[:-1]:
        _stop(pid)
    if died and not timed_out:  # it is ending by itself: let it, so that its own signal is seen (SIGXCPU...)
        last = os.pidfd_open(solutions[-1][0])
        select.select([last], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
        os.close(last)
    solution_signal, solution_pid = _stop(solutions[-1][0])
    os.close(judge_done)
    os.close(source_fd)
    mine.close()
    status = {"mode": mode if mode is not None else "", "timed_out": timed_out, "solution_signal": solution_signal,
              "judge_signal": judge_signal}
    return status, [p for p in (judge_pid, solution_pid) if p]


def _stop(pid: int) -> tuple[int, int]:
    """End a run process: (the signal that ended it on its own or 0, its pid if it is still to be reaped, or 0).
    SIGKILL to PID 1 of a namespace kills all of it; the processes can run no more code once it is sent."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        return 0, 0
    if not done:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return 0, pid
    return (os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0), 0


def _reap(pid: int) -> None:
    """Wait for a killed run process; it returns once every process of its PID namespace is gone."""
    if pid:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def serve(opts: dict, control: socket.socket) -> None:
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    while True:
        raw, fds, _, _ = socket.recv_fds(control, 4096, 3)
        if not raw:
            return
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"error": "job without its three descriptors"}).encode())
            continue
        status, dying = run_job(json.loads(raw), fds, opts, own_pid_ns)
        for pid in dying:  # before the answer: when the caller has its result, nothing of the run exists any more
            _reap(pid)
        if RUN_CGROUP is not None:
            status["memory_kills"] = RUN_CGROUP.kills_since_last()
        control.send(json.dumps(status).encode())


def take_slot(opts: dict, hello: dict) -> int | None:
    """The server's host-wide slot (sandbox.run_slot; its lock held for as long as this process lives) and its run
    cgroup (sandbox.cgroup, made while /sys/fs/cgroup is still in sight): the slot, None without one. Tells the
    caller in `hello` what bounds a run, or the fallback and what it loses."""
    global RUN_CGROUP
    from codealign.sandbox import cgroup, run_slot

    try:
        slot, _ = run_slot.acquire()
        hello["slot_lock"] = run_slot.lock_path(slot)
    except OSError as exc:
        slot, hello["cgroup"] = None, f"none (no sandbox slot: {exc})"
    if slot is not None:
        try:
            RUN_CGROUP = cgroup.RunCgroup.create(f"codealign-sandbox-{slot}", opts["memory_mb"], opts["nproc"])
            hello["cgroup"], hello["cgroup_dirs"] = RUN_CGROUP.describe(), RUN_CGROUP.dirs
            hello["cgroup_version"] = f"v{RUN_CGROUP.version}"
        except cgroup.Unavailable as exc:
            hello["cgroup"] = f"none ({exc})"
    if RUN_CGROUP is None:
        hello["cgroup"] += (": fallback to per-process rlimits, so a run's processes together may hold up to "
                            "max_processes x memory_mb, and its memfds and files count against no memory limit "
                            "(each file is capped at file_size_mb)")
    return slot


def prepare(root: str, opts: dict) -> tuple[dict, object]:
    """Everything the server does before its first fork (imports, its slot and run cgroup, the seccomp filter,
    isolation, run uids, the warm-up): (its hello to the caller: the protections in effect, what bounds a run and
    what it sees; the filter or None). Fills opts["shared_mounts"] and opts["uids"]."""
    global jail, solution_side, judge_process, warmup
    from codealign.sandbox import jail, judge_process, mounts, solution_side, syscall_filter, warmup

    for name in PRELOAD:
        importlib.import_module(name)
    os.chdir("/")
    hello = {"ready": True}
    slot = take_slot(opts, hello)
    # Before isolation: libseccomp's bindings are an installed package, which the runs' root does not show.
    seccomp = syscall_filter.build()
    shown, hidden, allowed = mounts.run_view()
    # The root shows every directory at its real path (jail.build_root) and not the links on the way to it (a venv
    # reached through a symlink): the import path the runs inherit must name the real paths too.
    sys.path[:] = [os.path.realpath(p) if p else p for p in sys.path]
    sys.path_importer_cache.clear()
    try:
        active, hello["mounts"] = jail.isolate_server(shown, hidden, allowed)
    except OSError as exc:
        active = ["isolation_failed: " + str(exc)]
        hello["mounts"] = f"the host's whole tree: isolation failed ({exc})"
    opts["shared_mounts"] = jail.shares_mounts()
    drop_user = os.geteuid() == 0 and "mount_namespace" in active and "user_namespace" not in active
    opts["uids"] = (None, None)
    if drop_user:  # without a slot, every run of every server is nobody: unprivileged still, but not apart
        opts["uids"] = jail.run_uids(slot) if slot is not None else (jail.NOBODY, jail.NOBODY)
        active += ["unprivileged_user"] + (["per_run_uid"] if slot is not None else [])
    hello["uids"] = opts["uids"]
    if "mount_namespace" in active:
        active += ["pid_namespace", "per_run_ipc_namespace", "no_new_privs"]
    active.append("rlimits")
    if "mount_namespace" not in active:
        seccomp = None
    if seccomp is not None:
        active.append("seccomp")
    if RUN_CGROUP is not None:
        active.append("run_cgroup")
    try:  # the run processes' first writes, made once here (sandbox.warmup)
        warmup.warm()
    except Exception:
        pass
    hello["active"] = active
    return hello, seccomp


def main() -> None:
    root, raw_opts, control_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, root)
    global FILTER
    control = socket.socket(fileno=control_fd)
    opts = json.loads(raw_opts)
    hello, FILTER = prepare(root, opts)
    control.send(json.dumps(hello).encode())
    # Everything so far is shared with every forked child. Frozen, the collector in a child never walks (and so
    # never writes to, and never copies) those pages: forks get cheaper.
    gc.collect()
    warmup.fill_pool_holes()
    gc.freeze()
    jail.release_free_heap()
    serve(opts, control)


if __name__ == "__main__":
    main()
