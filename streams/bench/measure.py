"""What the benchmarks measure with: CPU seconds and RSS of processes (from /proc), CPU shares per
phase, percentiles, and waiting for a condition with a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from streams.settings import Settings

Report = Callable[[str], None]  # where a benchmark prints its lines


def process_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return 0
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of named processes over a phase: where the machine's cores went."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self._started: dict[str, float] = {}
        self._at = 0.0

    def start(self) -> None:
        self._at = time.monotonic()
        self._started = {name: cpu_seconds(pid) for name, pid in self.processes.items()}

    def stop(self) -> tuple[float, dict[str, float]]:
        """(wall seconds, CPU seconds per process) since :meth:`start`."""
        wall = time.monotonic() - self._at
        return wall, {
            name: round(cpu_seconds(pid) - self._started[name], 2) for name, pid in self.processes.items()
        }


def dev_servers(settings: Settings) -> dict[str, int]:
    """The local stack's broker and ClickHouse pids, when the bench runs against them."""
    from streams.dev.stack import LocalStack

    stack = LocalStack(settings)
    found: dict[str, int] = {}
    if stack.kafka_bootstrap == settings.kafka_bootstrap and (pid := stack.kafka().pid()):
        found["broker (Tansu)"] = pid
    if (pid := stack.clickhouse().pid()) and settings.clickhouse_port == stack.clickhouse_port:
        found["ClickHouse"] = pid
    return found


def cpu_report(phase: str, events: int, wall: float, cpu: dict[str, float], report: Report) -> dict[str, Any]:
    workers = {name: seconds for name, seconds in cpu.items() if name.startswith("worker")}
    total = sum(workers.values())
    shares = ", ".join(f"{name} {seconds / wall:.0%}" for name, seconds in cpu.items())
    report(f"  {phase}: CPU per process over {wall:.1f}s (100% = one core): {shares}")
    per_cpu_second = {name: round(events / seconds) for name, seconds in workers.items() if seconds > 0}
    if total > 0:
        report(
            f"  {phase}: {events / total:,.0f} events per CPU-second of the whole worker; per process: "
            + ", ".join(f"{name} {n:,}" for name, n in per_cpu_second.items())
        )
    return {
        f"{phase}_wall_s": round(wall, 1),
        f"{phase}cpu_seconds": cpu,
        f"{phase}_events_per_worker_cpu_second": round(events / total) if total > 0 else None,
        f"{phase}_events_per_cpu_second_by_process": per_cpu_second,
    }


def interpolated(samples: list[tuple[float, dict[str, float]]], at: float) -> dict[str, float]:
    """The CPU seconds per process at wall-clock time ``at``, between the two samples around it."""
    before = max((s for s in samples if s[0] <= at), key=lambda s: s[0], default=samples[0])
    after = min((s for s in samples if s[0] >= at), key=lambda s: s[0], default=samples[-1])
    if after[0] <= before[0]:
        return before[1]
    share = (at - before[0]) / (after[0] - before[0])
    return {name: seconds + share * (after[1][name] - seconds) for name, seconds in before[1].items()}


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out waiting for {what}")
        time.sleep(0.05)
