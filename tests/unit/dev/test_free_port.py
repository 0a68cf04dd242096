"""free_port never hands out the same port twice, within a process or across processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from streams.dev.process import free_port, release_port

# Each child reserves ports, prints them, and keeps them until its standard input closes, so every
# reservation is live at once, as in test sessions that run side by side.
_CHILD = """
import sys
from streams.dev.process import free_port
print(" ".join(str(free_port()) for _ in range(int(sys.argv[1]))), flush=True)
sys.stdin.read()
"""


def test_many_calls_in_threads_never_return_the_same_port_twice() -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        ports = list(pool.map(lambda _: free_port(), range(600)))
    try:
        assert len(set(ports)) == len(ports)
    finally:
        for port in ports:
            release_port(port)


def test_processes_running_side_by_side_never_get_the_same_port() -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, "400"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        ports = [int(port) for child in children for port in child.stdout.readline().split()]  # type: ignore[union-attr]
        mine = [free_port() for _ in range(200)]
        assert len(ports) == 1600
        assert len(set(ports + mine)) == len(ports) + len(mine)
        for port in mine:
            release_port(port)
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=10)


def test_a_reserved_port_can_be_listened_on() -> None:
    port = free_port()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
    finally:
        release_port(port)
