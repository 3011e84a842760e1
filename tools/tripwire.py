"""Tripwires of the sandboxed worker: an audit hook and a monkeypatching check.

Both give the Code-Fixer clear messages for honest mistakes; neither is a boundary
(Python code can defeat both): the boundary is the kernel (docs/security.md,
:mod:`tools.isolation` and :mod:`tools.confine`).
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path

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


def _path_rules(workdir: Path, deny_read: Iterable[str], protected: Iterable[str],
                state: AuditState) -> tuple[Callable[[object, str], None],
                                            Callable[[object], None]]:
    """Build the hook's write and read checks for one job.

    The path functions are bound here, at install time, so code that replaces
    ``os.path.realpath`` later cannot change what the checks see.

    Returns:
        ``(check_write(path, event), check_read(path))``; both raise ``PermissionError``.
    """
    work = os.path.realpath(workdir)
    denied = tuple(os.path.realpath(p) for p in deny_read)
    guarded = frozenset(os.path.realpath(os.path.join(work, p)) for p in protected)
    pid = str(os.getpid())
    clear_refs = f"/proc/{pid}/clear_refs"
    realpath, getcwd, fspath, join = os.path.realpath, os.getcwd, os.fspath, os.path.join

    def resolve(path: object) -> str | None:
        if isinstance(path, int):
            return None  # an already open descriptor: its path was checked when opened
        try:
            p = fspath(path)  # type: ignore[call-overload]
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

    return check_write, check_read


def _candidate_probe(candidate_file: str, busy: list[bool]) -> Callable[[], bool]:
    """Build the check "is a candidate frame on the stack?" for the introspection rule.

    ``busy[0]`` is set while it walks the stack: ``sys._getframe`` raises its own audit
    event, which the hook must let through.
    """

    def from_candidate() -> bool:
        busy[0] = True
        try:
            frame: types.FrameType | None = sys._getframe(2)
            while frame is not None:
                if frame.f_code.co_filename == candidate_file:
                    return True
                frame = frame.f_back
            return False
        finally:
            busy[0] = False

    return from_candidate


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
    check_write, check_read = _path_rules(workdir, deny_read, protected, state)
    busy = [False]
    from_candidate = _candidate_probe(candidate_file, busy)

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
