"""Identity state in memory vs on disk (``state_dir``): memory per million identifiers and rates.

Run: ``.venv/bin/python -m streams.bench.identity_state [--persons 250000] [--cache 100000] [--rounds 1]``

Each measurement runs in a fresh process (RSS is per process), in ABBA order per round (memory, disk,
disk, memory), so drift on a shared machine falls on both sides alike:

- graph: the link writer's ``LinkState`` over ``persons`` shoppers with four identifiers each, its
  changes flushed every 500 events as the writer flushes after each transaction; then the link rate of
  a mix of events (a known identifier, a known customer with a new cookie, a new person).
- replica: the resolver's identifier -> person map with the same identifiers; then the fast-path
  lookup rate (``fast_person``) of events whose persons follow a skewed popularity (most events come
  from a minority of shoppers, as on a shop) and a uniform one.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streams.bench.identity_graph import person
from streams.bench.measure import rss_bytes
from streams.domain.identifiers import Identifier, IdKind
from streams.domain.identity import IdentityRules
from streams.domain.resolution import LinkState, MemoryLinkStorage, fast_person
from streams.state.identifiers import TEXT, StoredLinkTables, open_slot

_BATCH = 500


def _graph(storage: str, persons: int, cache: int, folder: Path) -> dict[str, Any]:
    gc.collect()
    base = rss_bytes()
    store = None
    if storage == "disk":
        store = open_slot(folder, "link-writer", "bench")
        state = LinkState.on(StoredLinkTables(store, cache), IdentityRules())
    else:
        state = LinkState.on(MemoryLinkStorage(), IdentityRules())
    started = time.perf_counter()
    for i in range(persons):
        state.apply(person(i), i, f"m{i}", "web", i)
        if store is not None and i % _BATCH == _BATCH - 1:
            store.flush()
    if store is not None:
        store.flush()
    built_s = time.perf_counter() - started
    gc.collect()
    used = rss_bytes() - base
    identifiers = len(state.graph)
    rng = random.Random(5)
    mix: list[list[Identifier]] = []
    for n in range(60_000):
        i = rng.randrange(persons)
        roll = n % 20
        if roll == 0:
            mix.append([Identifier(IdKind.ANONYMOUS_ID, f"new-{n}")])
        elif roll == 1:
            mix.append([person(i)[0], Identifier(IdKind.ANONYMOUS_ID, f"more-{n}")])
        else:
            mix.append([person(i)[rng.randrange(4)]])
    started = time.perf_counter()
    for n, ids in enumerate(mix):
        state.apply(ids, persons + n, f"x{n}", "web", persons + n)
        if store is not None and n % _BATCH == _BATCH - 1:
            store.flush()
    link_rate = len(mix) / (time.perf_counter() - started)
    result = {
        "identifiers": identifiers,
        "rss_bytes_per_million_identifiers": round(used / identifiers * 1e6),
        "build_events_per_s": round(persons / built_s),
        "link_mix_events_per_s": round(link_rate),
        "entries_in_memory": store.in_memory() if store is not None else identifiers,
    }
    if store is not None:
        store.close()
    return result


def _replica(storage: str, persons: int, cache: int, folder: Path) -> dict[str, Any]:
    gc.collect()
    base = rss_bytes()
    store = None
    owners: Any
    if storage == "disk":
        store = open_slot(folder, "resolver", "bench")
        owners = store.table(b"o", TEXT, cache)
    else:
        owners = {}
    interned: dict[str, str] = {}
    for i in range(persons):
        pid = f"{i:08x}-5d0c-5f3e-4b7a-5a439f0e6f6d"
        pid = interned.setdefault(pid, pid) if store is None else pid
        for ident in person(i):
            owners[ident.key] = pid
        if store is not None and i % 5_000 == 4_999:
            store.flush()
    if store is not None:
        store.flush()
    interned.clear()
    gc.collect()
    used = rss_bytes() - base
    identifiers = len(owners)
    rng = random.Random(9)
    hot = max(1, persons // 10)
    # 80% of events from the most active 10% of shoppers.
    skewed = [rng.randrange(hot) if rng.random() < 0.8 else rng.randrange(persons) for _ in range(200_000)]
    uniform = [rng.randrange(persons) for _ in range(200_000)]
    rates = {}
    for label, picks in (("skewed", skewed), ("uniform", uniform)):
        events = [[k.key for k in person(i)[: 1 + n % 3]] for n, i in enumerate(picks)]
        started = time.perf_counter()
        for keys in events:
            assert fast_person(keys, owners) is not None
        rates[f"lookup_{label}_events_per_s"] = round(len(events) / (time.perf_counter() - started))
    result = {
        "identifiers": identifiers,
        "rss_bytes_per_million_identifiers": round(used / identifiers * 1e6),
        **rates,
        "entries_in_memory": store.in_memory() if store is not None else identifiers,
    }
    if store is not None:
        store.close()
    return result


def _one(part: str, storage: str, persons: int, cache: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="omniseg-bench-identity-state-"))
    try:
        measure = _graph if part == "graph" else _replica
        return measure(storage, persons, cache, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=250_000, help="four identifiers each")
    parser.add_argument("--cache", type=int, default=100_000, help="identity_cache_identifiers")
    parser.add_argument("--rounds", type=int, default=1, help="ABBA rounds")
    parser.add_argument("--one", nargs=2, metavar=("PART", "STORAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one[0], args.one[1], args.persons, args.cache)))
        return
    results: dict[str, list[dict[str, Any]]] = {}
    for part in ("graph", "replica"):
        for round_ in range(args.rounds):
            for storage in ("memory", "disk", "disk", "memory"):
                command = [sys.executable, "-m", "streams.bench.identity_state", "--one", part, storage]
                command += ["--persons", str(args.persons), "--cache", str(args.cache)]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                results.setdefault(f"{part} {storage}", []).append(result)
                print(f"{part:8s} {storage:6s} round {round_ + 1}: {json.dumps(result)}", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
