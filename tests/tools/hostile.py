"""Hostile code run inside the sandbox, as candidate code would run after a gate bypass.

Every attack first switches the audit-hook tripwire off (its state is reachable through
``gc``, as an attacker found) and then talks to the kernel through libc, so only the OS
layers stand in the way. Each attack returns what it observed; the tests check the side
effects from outside, never trusting these reports alone.
"""

from __future__ import annotations

import ctypes
import gc
import os
from pathlib import Path

O_WRONLY, O_CREAT, O_RDONLY = 0o1, 0o100, 0
AF_INET, SOCK_STREAM = 2, 1
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
MS_REMOUNT, MS_BIND = 32, 4096


def disarm() -> ctypes.CDLL:
    """Switch the Python tripwire off and return libc, as a real escape would."""
    for obj in gc.get_objects():
        if type(obj).__name__ == "AuditState":
            obj.armed = False
    return ctypes.CDLL(None, use_errno=True)


def _err(libc_result: int) -> str:
    if libc_result >= 0:
        return "allowed"
    return f"failed: {os.strerror(ctypes.get_errno())}"


def write_file(libc: ctypes.CDLL, path: str, text: str = "pwned") -> str:
    fd = libc.open(path.encode(), O_WRONLY | O_CREAT, 0o644)
    if fd < 0:
        return _err(fd)
    libc.write(fd, text.encode(), len(text))
    libc.close(fd)
    return "allowed"


def read_file(libc: ctypes.CDLL, path: str, n: int = 4096) -> str:
    fd = libc.open(path.encode(), O_RDONLY)
    if fd < 0:
        return _err(fd)
    buf = ctypes.create_string_buffer(n)
    got = libc.read(fd, buf, n)
    libc.close(fd)
    return "read: " + buf.raw[: max(got, 0)].decode(errors="replace")


def connect(libc: ctypes.CDLL, port: int) -> str:
    fd = libc.socket(AF_INET, SOCK_STREAM, 0)
    if fd < 0:
        return "socket " + _err(fd)
    addr = (ctypes.c_ubyte * 16)(2, 0, port >> 8, port & 0xFF, 127, 0, 0, 1)
    return "connect " + _err(libc.connect(fd, addr, 16))


def job_escape(payload: dict, workdir: Path) -> dict:
    """Every route out that attackers used, through libc with the tripwire off."""
    libc = disarm()
    out: dict[str, str] = {}
    for i, path in enumerate(payload["host_files"]):
        out[f"write_host_{i}"] = write_file(libc, path)
    out["write_repo"] = write_file(libc, payload["repo_file"])
    out["read_shadow"] = read_file(libc, "/etc/shadow")
    out["read_host_secret"] = read_file(libc, payload["secret"])
    out["read_sibling_labels"] = read_file(libc, payload["sibling_labels"])
    out["read_parent_environ"] = read_file(libc, f"/proc/{payload['parent_pid']}/environ")
    out["read_parent_root"] = read_file(libc, f"/proc/{payload['parent_pid']}/root/etc/hostname")
    environ = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            environ.append(read_file(libc, f"/proc/{pid}/environ"))
    out["all_environ"] = " | ".join(environ)
    out["tcp_loopback"] = connect(libc, int(payload["port"]))
    out["unshare_user"] = _err(libc.unshare(CLONE_NEWUSER))
    out["unshare_net"] = _err(libc.unshare(CLONE_NEWNET))
    fd = libc.open(b"/proc/1/ns/mnt", O_RDONLY)
    out["setns"] = _err(libc.setns(fd, 0)) if fd >= 0 else _err(fd)
    out["remount_root_rw"] = _err(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None))
    out["mount_tmpfs"] = _err(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
    out["chroot"] = _err(libc.chroot(b"/tmp"))
    out["ptrace_init"] = _err(libc.ptrace(16, 1, None, None))  # PTRACE_ATTACH
    out["kill_host_process"] = _err(libc.kill(int(payload["victim_pid"]), 9))
    out["fork"] = _err(libc.fork())
    argv = (ctypes.c_char_p * 3)(b"/bin/sh", b"-c", None)
    out["execve"] = _err(libc.execve(b"/bin/sh", argv, None))
    out["io_uring"] = _err(libc.syscall(425, 8, ctypes.create_string_buffer(120)))
    out["bpf"] = _err(libc.syscall(321, 0, None, 0))
    out["uid"] = str(os.getuid())
    return out


def job_posixsubprocess(payload: dict, workdir: Path) -> dict:
    """C-level spawn that raises no audit event: libc's ``posix_spawn`` with the tripwire off.

    (``subprocess`` would be stopped by the audit hook before any system call; this goes
    straight to the kernel, where the seccomp filter must refuse the new process.)
    """
    libc = disarm()
    pid = ctypes.c_int(0)
    script = f"echo pwned > {payload['marker']}".encode()
    argv = (ctypes.c_char_p * 4)(b"/bin/sh", b"-c", script, None)
    rc = libc.posix_spawn(ctypes.byref(pid), b"/bin/sh", None, None, argv, None)
    return {"spawn": "allowed" if rc == 0 else f"failed: {os.strerror(rc)}"}


def job_torch_native(payload: dict, workdir: Path) -> dict:
    """torch's C++ file I/O, which the audit hook never sees."""
    import torch

    out = {}
    try:
        torch.save({"x": 1}, payload["outside"])
        out["native_write"] = "allowed"
    except Exception as e:  # noqa: BLE001
        out["native_write"] = f"failed: {type(e).__name__}"
    try:
        data = torch.from_file(payload["secret"], size=6, dtype=torch.uint8)
        out["native_read"] = bytes(data.tolist()).decode(errors="replace")
    except Exception as e:  # noqa: BLE001
        out["native_read"] = f"failed: {type(e).__name__}"
    return out


def job_leave_traps(payload: dict, workdir: Path) -> dict:
    """Leave a socket, a FIFO, symlinks to host files and a fake result behind."""
    libc = disarm()
    fd = libc.socket(1, SOCK_STREAM, 0)  # AF_UNIX, like libshm's manager
    path = str(workdir / "libshm.sock").encode()
    addr = ctypes.create_string_buffer(b"\1\0" + path, 110)
    libc.bind(fd, addr, 110)
    libc.mkfifo(str(workdir / "pipe").encode(), 0o644)
    libc.symlink(b"/etc/shadow", str(workdir / "weights.pt").encode())
    libc.symlink(payload["host_secret"].encode(), str(workdir / "secret-link").encode())
    libc.mkfifo(str(workdir / "result.json.tmp").encode(), 0o644)
    libc.symlink(payload["host_secret"].encode(), str(workdir / "result.json").encode())
    os._exit(0)  # no result of its own: the parent must read the symlink safely or not at all


def job_fifo_result(payload: dict, workdir: Path) -> dict:
    """A FIFO where result.json should be: a naive parent would block forever on it."""
    libc = disarm()
    libc.mkfifo(str(workdir / "result.json").encode(), 0o644)
    os._exit(0)


def job_huge_event(payload: dict, workdir: Path) -> dict:
    """An endless event line without a newline on the events channel."""
    from tools import worker

    worker._events.write("x" * (32 << 20))
    worker._events.flush()
    return {"survived": True}


def job_daemon(payload: dict, workdir: Path) -> dict:
    """Try to leave a process behind that outlives the job (double fork)."""
    libc = disarm()
    pid = libc.fork()
    if pid == 0:  # pragma: no cover - only reached if fork were allowed
        libc.setsid()
        while True:
            write_file(libc, payload["marker"], "daemon")
            libc.sleep(1)
    import threading

    started = threading.Thread(target=lambda: None)
    started.start()  # threads (clone with CLONE_THREAD) must keep working
    started.join()
    return {"fork": _err(pid), "threads": "ok", "workdir": str(workdir)}


def job_fill_disk(payload: dict, workdir: Path) -> dict:
    """Many files, each under the file-size rlimit: only the disk watchdog stops this."""
    chunk = b"x" * (1 << 20) * int(payload.get("mb_per_file", 1))
    for i in range(100_000):
        (workdir / f"fill-{i}").write_bytes(chunk)
    return {"filled": True}
