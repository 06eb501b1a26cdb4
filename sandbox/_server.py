"""The sandbox fork server. Trusted code only; model code runs in its children.

    python -I -B _server.py PROJECT_ROOT OPTIONS_JSON TESTS_FD VERDICT_FD

Three roles:
- server (this process): pre-imported, in its own network/mount/IPC namespaces with a read-only view of the host.
  Per job it reads the solution (never the tests), checks its syntax, and forks the solution's process as PID 1 of
  a fresh PID namespace; it hands the judge the two pipe ends that reach that process, and reaps it afterwards.
- judge (forked once at start-up, see sandbox.judge): reads the tests from the caller, runs them, calls into the
  solution through plain values, decides the verdict and answers the caller.
- solution process (see sandbox.solution_side): runs the program, then serves calls.
One fork per job: the judge is long-lived and nothing is forked from it, so the tests it has seen reach no
model code.
"""

import gc
import importlib
import json
import os
import select
import signal
import socket
import sys

# What solutions commonly import, loaded once and shared by every fork. Kept short on purpose: a larger server
# makes every fork dearer, and anything else still imports (the interpreter's files are readable).
PRELOAD = (
    "array bisect cmath collections copy datetime decimal fractions functools hashlib heapq itertools math "
    "operator random re statistics string struct time typing"
).split()


def start_judge(opts: dict, tests_fd: int, verdict_fd: int) -> socket.socket:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:
        try:
            from sandbox import judge  # imported here: the server (which every solution forks from) stays small

            mine.close()
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            jail.confine("/", 4096, 1 << 30, opts["file_mb"], opts["nproc"], opts["drop_user"])
            judge.judge_loop(theirs, tests_fd, verdict_fd)
        finally:
            os._exit(0)
    theirs.close()
    os.close(tests_fd)
    os.close(verdict_fd)
    return mine


def fork_solution(code, opts: dict, own_pid_ns: int) -> tuple[int, int, int]:
    """The solution's process, PID 1 of a new PID namespace. Returns (pid, requests fd, replies fd)."""
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    jail.new_pid_namespace_for_children(own_pid_ns)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(req_w)
            os.close(rep_r)
            solution_side.solution_process(code, req_r, rep_w, opts)
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(rep_w)
    return pid, req_w, rep_r


def serve(opts: dict, control: socket.socket) -> None:
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    while True:
        job = frames.read_frame(0)
        if job is None:
            return
        header = {"mode": job["mode"], "timeout": job["timeout"]}
        try:
            code = compile(job["solution"], "<solution>", "exec")
        except (SyntaxError, ValueError) as exc:  # ValueError: NUL bytes
            socket.send_fds(control, [json.dumps({**header, "syntax_error": solution_side.describe(exc)}).encode()],
                            [])
            await_judge(control, None, job["timeout"])
            continue
        pid, requests, replies = fork_solution(code, opts, own_pid_ns)
        socket.send_fds(control, [json.dumps({**header, "pid": pid}).encode()], [requests, replies])
        os.close(requests)
        os.close(replies)
        await_judge(control, pid, job["timeout"])


def await_judge(control: socket.socket, pid: int | None, timeout: float) -> None:
    """Wait for the judge to finish the job; reap the solution's process; answer the judge's status question."""
    status = None
    deadline_s = timeout + 5.0
    while True:
        ready, _, _ = select.select([control], [], [], deadline_s)
        if not ready:  # the judge is stuck: end everything; the caller sees the server gone and starts anew
            if pid:
                os.kill(pid, signal.SIGKILL)
            os.killpg(0, signal.SIGKILL)
        msg = json.loads(control.recv(4096) or b'{"op": "gone"}')
        if msg["op"] == "status" and pid:
            _, status = os.waitpid(pid, 0)
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
            control.sendall(json.dumps({"signal": sig}).encode())
            continue
        if msg["op"] == "gone":
            sys.exit(1)
        break
    if pid and status is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def main() -> None:
    root, raw_opts, tests_fd, verdict_fd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, root)
    global frames, jail, solution_side
    from sandbox import frames, jail, solution_side

    for name in PRELOAD:
        importlib.import_module(name)
    opts = json.loads(raw_opts)
    os.chdir("/")
    try:
        active = jail.isolate_server([sys.base_prefix, sys.prefix, os.path.join(root, "sandbox")])
    except OSError as exc:
        active = ["isolation_failed: " + str(exc)]
    opts["drop_user"] = os.geteuid() == 0 and "mount_namespace" in active and "user_namespace" not in active
    if opts["drop_user"]:
        active.append("unprivileged_user")
    active += ["pid_namespace", "rlimits", "no_new_privs"] if "mount_namespace" in active else ["rlimits"]
    control = start_judge(opts, tests_fd, verdict_fd)
    frames.write_frame(1, {"ready": True, "active": active})
    # Everything so far is shared with every forked child. Frozen, the collector in a child never walks (and so
    # never writes to, and never copies) those pages: forks get cheaper.
    gc.collect()
    gc.freeze()
    serve(opts, control)


if __name__ == "__main__":
    main()
