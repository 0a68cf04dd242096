"""A detached server process with a pid file, a log file and a readiness check."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says why and what to do."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Ports handed out by free_port: the lock files stay open (and locked) for the life of this process, so
# no other process that uses free_port gets the same port, and this process never hands one out twice.
_RESERVED: dict[int, int] = {}
_RESERVE_LOCK = threading.Lock()
_RESERVATIONS_DIR = Path(tempfile.gettempdir()) / "omniseg-ports"
# Below the kernel's ephemeral range and above the local stack's default ports (18123-19092), so
# neither an outgoing connection nor `omniseg dev up` takes a port between its reservation and its use.
_FIRST_PORT = 20_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def free_port() -> int:
    """A port nobody listens on, reserved for this process: two calls, here or in any other process
    that uses this function, never return the same port while the reserving process lives.

    A port bound and released (port 0) could be handed out twice, and the kernel's ephemeral range is
    also where outgoing connections take their ports; so the port is picked at random below that range,
    checked to be bindable, and reserved with an exclusive lock on a per-port file.
    """
    low, _ = _ephemeral_range()
    last = max(low - 1, _FIRST_PORT + 1000)
    _RESERVATIONS_DIR.mkdir(mode=0o1777, parents=True, exist_ok=True)
    with _RESERVE_LOCK:
        for _ in range(10_000):
            port = random.randint(_FIRST_PORT, last)
            if port in _RESERVED or not port_is_free(port):
                continue
            fd = os.open(_RESERVATIONS_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            _RESERVED[port] = fd
            return port
    raise StackError(f"no free port between {_FIRST_PORT} and {last}")


def release_port(port: int) -> None:
    """Give back a port from :func:`free_port` (optional: the reservation ends with the process)."""
    with _RESERVE_LOCK:
        fd = _RESERVED.pop(port, None)
    if fd is not None:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass
class ManagedProcess:
    """One server: started detached (own session) so it outlives the command that started it."""

    name: str
    argv: Sequence[str]
    state_dir: Path
    ports: Sequence[int]
    is_ready: Callable[[], bool]
    cwd: Path | None = None
    env: dict[str, str] | None = None

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, timeout_s: float) -> int:
        """Start the server and block until it is ready; returns its pid."""
        running = self.pid()
        if running is not None:
            if self.is_ready():
                return running
            raise StackError(
                f"{self.name} (pid {running}) is running but not answering; "
                f"run `omniseg dev down` and try again (log: {self.log_file})"
            )
        for port in self.ports:
            if not port_is_free(port):
                raise StackError(
                    f"{self.name}: port {port} on 127.0.0.1 is already taken by another process. "
                    f"Stop it (`ss -ltnp | grep :{port}`) or choose another port "
                    "(see OMNISEG_DEV_* settings)."
                )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    list(self.argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise StackError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"last log lines:\n{tail(self.log_file)}\n(full log: {self.log_file})"
                )
            if self.is_ready():
                return proc.pid
            time.sleep(0.1)
        self.stop()
        raise StackError(
            f"{self.name} did not become ready within {timeout_s:.0f} s; "
            f"last log lines:\n{tail(self.log_file)}\n(full log: {self.log_file})"
        )

    def stop(self, timeout_s: float = 15.0) -> bool:
        """Stop by pid: SIGTERM, then SIGKILL after ``timeout_s``. True if something was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.05)
        return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
