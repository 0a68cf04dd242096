"""A real two-replica ClickHouse cluster for the cluster tests: one ZooKeeper (Debian's ``zookeeper``),
two ClickHouse 18.16 servers (one shard of two replicas), each on its own free ports and data dir.

:func:`running_cluster` starts all three and stops them by pid on exit, even after a failure. With
``zookeeper`` missing it fails with one clear line in CI, and skips with the reason elsewhere.
It holds no tests itself: test_cluster.py uses it.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from clickhouse_driver import Client

from streams.dev import servers
from streams.dev.probes import clickhouse_ready
from streams.dev.process import ManagedProcess, free_port

CLUSTER = "omniseg_test"
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
ZOOKEEPER_CONF = Path("/etc/zookeeper/conf")
JAVA = Path("/usr/bin/java")
INSTALL_ZOOKEEPER = "apt-get install zookeeper (or run scripts/setup.sh)"


@dataclass
class Replica:
    name: str
    port: int
    proc: ManagedProcess

    def client(self, database: str = "default") -> Client:
        return Client(host="127.0.0.1", port=self.port, database=database, send_receive_timeout=120)


@dataclass
class Cluster:
    name: str
    zookeeper_port: int
    replicas: list[Replica]


def require_zookeeper() -> None:
    """Fail (in CI) or skip (locally) with one line when Debian's zookeeper package is missing."""
    missing = [str(path) for path in (ZOOKEEPER_JAR, JAVA) if not path.exists()]
    if not missing:
        return
    reason = f"ZooKeeper is not installed ({', '.join(missing)} missing): {INSTALL_ZOOKEEPER}"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _zookeeper_ready(port: int) -> bool:
    """True once ZooKeeper opens a session. ``ruok`` answers before the server accepts sessions, and
    ClickHouse 18.16 crashes when its first ZooKeeper session is refused, so the probe is a real
    handshake: a ConnectRequest must get a ConnectResponse with a session id."""
    request = struct.pack(">iqiqi", 0, 0, 10000, 0, 16) + b"\0" * 16
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            answer = b""
            while len(answer) < 24:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                answer += chunk
    except OSError:
        return False
    _length, _protocol, timeout_ms, session_id = struct.unpack(">iiiq", answer[:20])
    return bool(timeout_ms > 0 and session_id != 0)


def _zookeeper(state: Path, port: int) -> ManagedProcess:
    home = state / "zookeeper"
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "zoo.cfg").write_text(
        f"tickTime=500\ninitLimit=10\nsyncLimit=5\ndataDir={home / 'data'}\nclientPort={port}\n"
        "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
        "maxSessionTimeout=60000\n"
    )
    # log4j and its slf4j binding (both pulled in by the package) give the server a log to read.
    jars = [ZOOKEEPER_JAR, *(Path("/usr/share/java") / j for j in ("slf4j-log4j12.jar", "log4j-1.2.jar"))]
    classpath = ":".join(str(p) for p in [ZOOKEEPER_CONF, *jars] if p.exists())
    return ManagedProcess(
        name="zookeeper",
        argv=[
            str(JAVA),
            "-Xmx256m",
            "-Dzookeeper.log.dir=" + str(home),
            "-Dzookeeper.root.logger=INFO,CONSOLE",
            "-cp",
            classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(home / "zoo.cfg"),
        ],
        state_dir=state,
        ports=[port],
        is_ready=lambda: _zookeeper_ready(port),
    )


_CLUSTER_CONFIG = """<?xml version="1.0"?>
<yandex>
    <zookeeper>
        <node><host>127.0.0.1</host><port>{zookeeper_port}</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
    <remote_servers>
        <{cluster}>
            <shard>
                <internal_replication>true</internal_replication>
{replicas}
            </shard>
        </{cluster}>
    </remote_servers>
    <macros>
        <shard>01</shard>
        <replica>{replica}</replica>
    </macros>
    <distributed_ddl>
        <path>/clickhouse/task_queue/ddl</path>
    </distributed_ddl>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <interserver_http_port>{interserver_port}</interserver_http_port>
</yandex>
"""


def _clickhouse_node(
    state: Path,
    name: str,
    tcp_port: int,
    http_port: int,
    interserver_port: int,
    zookeeper_port: int,
    all_ports: list[int],
) -> ManagedProcess:
    node = state / name
    proc = servers.clickhouse(node, tcp_port, http_port)
    home = (node / "clickhouse").resolve()
    (home / "config.d").mkdir(exist_ok=True)
    replicas = "\n".join(
        f"                <replica><host>127.0.0.1</host><port>{port}</port></replica>" for port in all_ports
    )
    (home / "config.d" / "cluster.xml").write_text(
        _CLUSTER_CONFIG.format(
            zookeeper_port=zookeeper_port,
            cluster=CLUSTER,
            replicas=replicas,
            replica=name,
            interserver_port=interserver_port,
        )
    )
    proc.name = f"clickhouse-{name}"
    proc.ports = [tcp_port, http_port, interserver_port]
    proc.is_ready = lambda: clickhouse_ready("127.0.0.1", tcp_port)
    return proc


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """ZooKeeper and two ClickHouse replicas, started here and stopped by pid on exit."""
    require_zookeeper()
    state = Path(tempfile.mkdtemp(prefix="omniseg-test-cluster-"))
    zookeeper_port = free_port()
    names = ("r1", "r2")
    tcp_ports = [free_port() for _ in names]
    procs: list[ManagedProcess] = [_zookeeper(state, zookeeper_port)]
    replicas = []
    for name, tcp_port in zip(names, tcp_ports, strict=True):
        proc = _clickhouse_node(state, name, tcp_port, free_port(), free_port(), zookeeper_port, tcp_ports)
        procs.append(proc)
        replicas.append(Replica(name, tcp_port, proc))
    try:
        for proc in procs:
            proc.start(timeout_s=60)
        yield Cluster(CLUSTER, zookeeper_port, replicas)
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(state, ignore_errors=True)
