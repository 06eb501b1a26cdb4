"""A seccomp filter for the run's processes (solution and judge), through libseccomp's Python API (`pyseccomp`, a
ctypes binding of the system's libseccomp.so.2, API-compatible with libseccomp's own bindings).

Default allow, with a deny list: what an ordinary program never needs and an escape or a cross-run channel does
(debugging other processes, namespaces and mounts, kernel keyrings, eBPF, perf, raw and packet sockets, System V
IPC, io_uring, module loading). Denied calls fail with EPERM, as an unprivileged program would see; `clone3` fails
with ENOSYS so the C library falls back to `clone`, whose namespace flags can be inspected (clone3 passes them in
memory, out of a filter's reach).
"""

from __future__ import annotations

import ctypes
import errno
import os

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount", "open_tree", "fsopen", "fsmount",
    "fsconfig", "fspick", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
    "acct", "quotactl", "syslog", "iopl", "ioperm", "personality", "lookup_dcookie", "vhangup",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "shmget", "shmat", "shmdt", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
    "semctl",
)
NAMESPACE_FLAGS = (0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x02000000)
AF_PACKET, SOCK_RAW, SOCK_PACKET, SOCK_TYPE_MASK = 17, 3, 10, 0xF


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CompiledFilter:
    """The BPF program libseccomp generated, compiled once in the server: loading it in each run process is one
    prctl, where asking libseccomp to load would generate the program again in every fork (about 1 ms each)."""

    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

    def __init__(self, program: bytes):
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(len(program) // 8, ctypes.cast(self._buffer, ctypes.c_void_p))
        self._libc = ctypes.CDLL(None, use_errno=True)

    def load(self) -> None:
        """After no_new_privs. Raises OSError if the kernel refuses it."""
        rc = self._libc.prctl(self.PR_SET_SECCOMP, self.SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0)
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"seccomp: {os.strerror(err)}")


def build() -> CompiledFilter | None:
    f = _rules()
    if f is None:
        return None
    read, write = os.pipe()
    try:
        with os.fdopen(write, "wb", closefd=True) as out:
            f.export_bpf(out)
        program = b""
        while chunk := os.read(read, 1 << 16):
            program += chunk
    except Exception:
        return None
    finally:
        os.close(read)
    return CompiledFilter(program) if program and len(program) % 8 == 0 else None


def _rules():
    """The filter's rules in libseccomp; None where libseccomp is missing."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError):
        return None
    try:
        f = sc.SyscallFilter(sc.ALLOW)
        deny = sc.ERRNO(errno.EPERM)
        for name in DENIED:
            try:
                f.add_rule(deny, name)
            except (RuntimeError, ValueError, OSError):  # a call this kernel/architecture does not have
                pass
        for flag in NAMESPACE_FLAGS:  # clone(CLONE_NEW*): no new namespaces from inside a run
            f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        f.add_rule(deny, "socket", sc.Arg(0, sc.EQ, AF_PACKET))
        for kind in (SOCK_RAW, SOCK_PACKET):
            f.add_rule(deny, "socket", sc.Arg(1, sc.MASKED_EQ, SOCK_TYPE_MASK, kind))
        return f
    except Exception:  # an old libseccomp: run without the filter, and say so in the protections
        return None
