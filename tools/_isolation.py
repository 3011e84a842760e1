"""Operating-system isolation layers for the sandboxed worker (DESIGN.md §6, layer 2).

Two sides use this module:

* the parent (``tools.sandbox``) calls :func:`make_preexec` to get the function that runs
  in the forked child before ``exec``: rlimits and ``unshare`` of the network and mount
  namespaces (root only; silently skipped elsewhere);
* the child (``tools.worker``) calls :func:`private_mounts` (read-only file system except
  the work dir, label files hidden under empty mounts), :func:`tune_malloc`,
  :func:`install_audit_hook` and :class:`Integrity` (detects monkeypatching of torch and
  of the evaluator's own modules).

Every function reports the layers it actually activated, so traces can say what held.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import resource
import signal
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


PR_SET_PDEATHSIG = 1


def namespace_id(kind: str) -> str:
    """Return the id of this process's ``kind`` namespace ("net", "mnt"), or ""."""
    try:
        return os.readlink(f"/proc/self/ns/{kind}")
    except OSError:
        return ""


def make_preexec(rlimits: dict[int, int]) -> Callable[[], None]:
    """Build the ``preexec_fn`` run in the forked child before it executes the worker.

    Everything it needs is resolved here, in the parent, so the child only makes
    system calls (no imports or library loading between fork and exec).

    Args:
        rlimits: ``resource.RLIMIT_*`` -> soft and hard limit to set.

    Returns:
        A function that sets the rlimits and tries to unshare the network and mount
        namespaces; whether that worked is checked later by the worker.
    """
    libc = _libc()
    unshare = libc.unshare if libc is not None else None
    prctl = libc.prctl if libc is not None else None
    items = list(rlimits.items())

    def preexec() -> None:
        if prctl is not None:
            # The worker lives in its own session, so a kill -9 of the search would leave
            # it training on; the kernel sends it SIGKILL when its parent dies instead.
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for which, value in items:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass  # cannot lower below current usage or not permitted: worker reports it
        if unshare is not None:
            # Two calls: a kernel without one namespace type must not cost the other.
            unshare(CLONE_NEWNET)
            unshare(CLONE_NEWNS)

    return preexec


def _mount(libc: ctypes.CDLL, src: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> bool:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    return libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def private_mounts(workdir: Path, hide: Iterable[str], parent_mnt_ns: str) -> list[str]:
    """Make the file system read-only except ``workdir`` and hide ``hide`` paths.

    Runs in the worker before any candidate code. Only acts when this process is in a
    mount namespace of its own (``parent_mnt_ns`` differs), and only after making every
    mount private, so nothing propagates back to the host.

    Args:
        workdir: The job's scratch directory; stays writable.
        hide: Files or directories the job must not read (label files); each is covered
            by an empty read-only tmpfs (directories) or ``/dev/null`` (files).
        parent_mnt_ns: The parent's mount-namespace id (``namespace_id("mnt")``).

    Returns:
        Names of the layers that are active ("fs-readonly", "labels-hidden").
    """
    libc = _libc()
    if libc is None or not parent_mnt_ns or namespace_id("mnt") in ("", parent_mnt_ns):
        return []
    if not _mount(libc, None, "/", None, MS_REC | MS_PRIVATE):
        return []
    layers: list[str] = []
    work = os.path.realpath(workdir)
    hidden = 0
    hide = [os.path.realpath(p) for p in hide if os.path.exists(p)]
    for path in hide:
        if os.path.isdir(path):
            hidden += _mount(libc, "none", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV,
                             "size=4k,mode=000")
        else:
            hidden += _mount(libc, "/dev/null", path, None, MS_BIND)
    if hide and hidden == len(hide):
        layers.append("labels-hidden")
    if not _mount(libc, work, work, None, MS_BIND | MS_REC):
        return layers
    failed = []
    with open("/proc/self/mounts") as fh:
        mounts = [line.split() for line in fh]
    for _dev, point, _fs, opts, *_ in mounts:
        point = point.replace("\\040", " ")
        if point == work or point.startswith(work + "/") or point.startswith(("/dev", "/proc")):
            continue  # the work dir stays writable; /dev and /proc are handled by the hook
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in opts.split(","):
            flags |= _MOUNT_FLAGS.get(opt, 0)
        if not _mount(libc, None, point, None, flags):
            failed.append(point)
    # The mount holding "/" must be read-only for the layer to count.
    if "/" not in failed:
        layers.append("fs-readonly")
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


# --- audit hook -------------------------------------------------------------------------

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
    """Mutable switches of the audit hook, kept by the worker (not reachable by candidates).

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
    """Install a ``sys.addaudithook`` hook (it cannot be removed) enforcing the policy.

    Denied: process creation and signalling, sockets, ctypes once armed, writes outside
    ``workdir``, writes to ``protected`` files (job/result) unless the worker allows it,
    reads under ``deny_read`` and of other processes' ``/proc`` entries, and frame /
    globals introspection from candidate code.

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
        if not inside(p, work):
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

    Candidate code runs in the evaluator's process, so replacing e.g.
    ``F.cross_entropy``, ``nn.Module.parameters`` or ``torch.Tensor.argmax`` would change
    what the evaluator computes. The static gate forbids this; this check catches what
    slips past it: code-like attributes (functions, classes, descriptors) that were
    replaced or deleted, and new class attributes that shadow an inherited one.
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
