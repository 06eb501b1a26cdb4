"""A seccomp filter for the run's processes (solution and judge), through libseccomp's Python API (`pyseccomp`, a
ctypes binding of the system's libseccomp.so.2, API-compatible with libseccomp's own bindings).

Default allow, with a deny list: what an ordinary program never needs and an escape or a cross-run channel does
(debugging other processes, namespaces and mounts, kernel keyrings, eBPF, perf, raw and packet sockets, System V
IPC, io_uring, module loading). Denied calls fail with EPERM, as an unprivileged program would see; `clone3` fails
with ENOSYS so the C library falls back to `clone`, whose namespace flags can be inspected (clone3 passes them in
memory, out of a filter's reach).
"""

from __future__ import annotations

import errno

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


def build():
    """The filter, ready to `.load()` in a child after no_new_privs; None where libseccomp is missing."""
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
