"""The mypyc build of the per-event modules (streams/compiled.py): used only when it matches the sources,
and it computes exactly what the plain Python does.

Each case runs in a fresh interpreter, because the choice is made once, when ``streams`` is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from streams import compiled

PROBE = """
import json, sys
import streams.domain.segments.engine as engine
from streams.compiled import status
state = status()
print(json.dumps({"active": state.active, "reason": state.reason, "engine": engine.__file__}))
"""

# The same events through the segment engine with the 50 bench definitions; prints a digest of every
# change and of every profile's saved state (the bytes written to segments.state).
WORKLOAD = """
import hashlib, random
from streams.dev.workload import bench_definitions, shopper_events
from streams.wire.segments import decode_resolved, encode_changes, encode_state
from streams.wire.identity import event_body, resolved_event
from streams.wire.codecs import EVENT_CODEC
from streams.compiled import status
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.profile import Profile

engine = SegmentEngine([(d, 1) for d in load_definitions([("bench", bench_definitions())])])
rng = random.Random(11)
profiles = {}
digest = hashlib.sha256()
now = 1_764_000_000_000
for n, event in enumerate(shopper_events(3000, 300, rng, 0)):
    person = f"p{n % 300}"
    body = event_body(EVENT_CODEC.encode(event.to_avro()))
    _, segment_event = decode_resolved(resolved_event(person, [f"customer_id:{person}"], now, body))
    profile = profiles.setdefault(person, Profile(person))
    now += 1000
    for record in encode_changes(engine.apply(profile, segment_event, now), profile, now):
        digest.update(record)
for person in sorted(profiles):
    restored = Profile.from_json(profiles[person].to_json())
    digest.update(encode_state(person, restored, None, now))
print(status().active, digest.hexdigest())
"""

# The sinks' record -> column steps on the bench's events (every kind of event and line item, at fixed
# times) and on segment changes with and without contact details; prints a digest of every column.
SINK_WORKLOAD = """
import hashlib, random
from datetime import UTC, datetime
from streams.dev.workload import shopper_events
from streams.wire.identity import event_body, resolved_event
from streams.sinks.segments import _CHANGE_READER
from streams.compiled import status
from streams.wire.codecs import EVENT_CODEC, SEGMENT_CHANGE_CODEC
from streams.sinks.events_table import EventColumns
from streams.sinks.identity_tables import IdentityBatch
from streams.wire.row_decoder import EventDecoder, ResolvedDecoder
from streams.sinks.segment_tables import SegmentBatch

events, decoded = EventColumns(), EventDecoder()
identity, resolved = IdentityBatch(), ResolvedDecoder()
segments = SegmentBatch()
for n, event in enumerate(shopper_events(2000, 200, random.Random(5), 0)):
    avro = event.to_avro()
    avro["timestamp"] = avro["receivedAt"] = datetime.fromtimestamp(1_764_000_000 + n, UTC)
    body = EVENT_CODEC.encode(avro)
    events.append(decoded.decode(body), n % 3, n)
    person = f"p{n % 200}"
    record = resolved_event(person, [f"email:{person}@x.com"], 1_764_000_000_000 + n, event_body(body))
    identity.add_resolved(resolved.decode(record), 0, n)
    contacts = dict.fromkeys(("email", "phone", "espSubscriberId", "userId", "crmId", "loyaltyCard"))
    if n % 4:
        contacts.update(email=f"{person}@x.com", userId=person if n % 2 else None)
    change = {
        "changeId": f"c{n}", "personId": person, "segmentId": f"s{n % 7}",
        "subject": "SKU-1" if n % 5 == 0 else None, "change": "entered" if n % 2 else "exited",
        "seq": n, "at": datetime.fromtimestamp(1_764_000_000 + n, UTC), "trigger": "event",
        "reason": "r", "messageId": f"m{n}", "definitionVersion": 1 + n % 3, "contacts": contacts,
        "emittedAt": datetime.fromtimestamp(1_764_000_001 + n, UTC),
    }
    segments.add_change(_CHANGE_READER.decode(SEGMENT_CHANGE_CODEC.encode(change)), 1, n)
batches = [("events", events.columns)]
batches += [(table, columns.columns) for table, columns in identity.tables()]
batches += [(table, columns.columns) for table, columns in segments.tables()]
digest = hashlib.sha256()
for table, columns in batches:
    rows = [[list(v) if isinstance(v, (list, tuple)) else v for v in column] for column in columns]
    digest.update(repr((table, rows)).encode())
print(status().active, len(batches), digest.hexdigest())
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("OMNISEG_PURE_PYTHON", "OMNISEG_COMPILED_DIR")
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _probe(**env: str) -> tuple[dict[str, str], str]:
    result = _run(PROBE, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def _built() -> bool:
    return compiled.check(compiled.DEFAULT_DIR) == ""


needs_build = pytest.mark.skipif(
    not _built() and os.environ.get("CI") != "true",
    reason="no usable build in streams/_compiled (omniseg compiled build); CI always builds it",
)


@needs_build
def test_the_build_is_used_when_it_matches_the_sources() -> None:
    state, _ = _probe()
    assert state["active"], state["reason"]
    assert state["engine"].endswith(sysconfig.get_config_var("EXT_SUFFIX"))


@needs_build
def test_the_avro_readers_of_the_topic_schemas_are_compiled_too() -> None:
    code = """
from streams.wire import codecs as serde
from streams.wire.row_decoder import compile_reader
codecs = [v for v in vars(serde).values() if isinstance(v, serde.AvroCodec)]
readers = [compile_reader(codec.current.parsed) for codec in codecs]
print(len(readers), sum(not hasattr(reader, "__code__") for reader in readers))
"""
    fast, plain = _run(code), _run(code, OMNISEG_PURE_PYTHON="1")
    assert fast.returncode == 0 and plain.returncode == 0, fast.stderr + plain.stderr
    total, compiled_readers = map(int, fast.stdout.split())
    assert total >= 10 and compiled_readers == total
    assert plain.stdout.split() == [str(total), "0"]  # generated at run time, as before


def _compiled_and_plain(code: str) -> tuple[list[str], list[str]]:
    """The words ``code`` prints with the build, and as plain Python; both must have succeeded."""
    fast = _run(code)
    plain = _run(code, OMNISEG_PURE_PYTHON="1")
    assert fast.returncode == 0, fast.stderr
    assert plain.returncode == 0, plain.stderr
    return fast.stdout.split(), plain.stdout.split()


@needs_build
def test_compiled_and_plain_python_compute_the_same_changes_and_states() -> None:
    (fast_active, fast_digest), (plain_active, plain_digest) = _compiled_and_plain(WORKLOAD)
    assert (fast_active, plain_active) == ("True", "False")
    assert fast_digest == plain_digest


@needs_build
def test_compiled_and_plain_python_fill_the_same_sink_columns() -> None:
    fast, plain = _compiled_and_plain(SINK_WORKLOAD)
    (fast_active, fast_tables, fast_digest), (plain_active, plain_tables, plain_digest) = fast, plain
    assert (fast_active, plain_active) == ("True", "False")
    assert fast_tables == plain_tables == "3"
    assert fast_digest == plain_digest


def test_pure_python_when_asked() -> None:
    state, _ = _probe(OMNISEG_PURE_PYTHON="1")
    assert not state["active"]
    assert state["engine"].endswith("engine.py")
    assert "OMNISEG_PURE_PYTHON" in state["reason"]


def test_no_build_runs_plain_python_quietly(tmp_path: Path) -> None:
    state, stderr = _probe(OMNISEG_COMPILED_DIR=str(tmp_path / "none"))
    assert not state["active"]
    assert state["engine"].endswith("engine.py")
    assert "not built" in state["reason"]
    assert "pure Python" not in stderr


def _manifest(directory: Path, sha_of: dict[str, str] | None = None) -> None:
    """A manifest for ``directory`` whose hashes match the sources unless overridden."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = {}
    for name in compiled.MODULES:
        file = name.replace(".", "/") + suffix
        path = directory / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not an extension")
        sha = (sha_of or {}).get(name) or compiled._digest(compiled.source_path(name))
        modules[name] = {"file": file, "sha256": sha}
    manifest = {
        "format": compiled.FORMAT,
        "interpreter": compiled._interpreter(),
        "modules": modules,
        "support": {},
        "generated": {},
    }
    (directory / compiled.MANIFEST).write_text(json.dumps(manifest))


def test_an_edited_source_turns_the_whole_build_off_and_says_how_to_rebuild(tmp_path: Path) -> None:
    _manifest(tmp_path, {"streams.domain.segments.profile": "0" * 64})
    state, stderr = _probe(OMNISEG_COMPILED_DIR=str(tmp_path))
    assert not state["active"]
    assert state["engine"].endswith("engine.py")  # not only the edited module: all of them
    assert "streams/domain/segments/profile.py changed since the build" in stderr
    assert "rebuild" in stderr


def test_a_build_for_another_interpreter_is_not_used(tmp_path: Path) -> None:
    _manifest(tmp_path)
    manifest = json.loads((tmp_path / compiled.MANIFEST).read_text())
    manifest["interpreter"] = "cpython-312 .cpython-312-x86_64-linux-gnu.so"
    (tmp_path / compiled.MANIFEST).write_text(json.dumps(manifest))
    state, stderr = _probe(OMNISEG_COMPILED_DIR=str(tmp_path))
    assert not state["active"]
    assert "built for cpython-312" in state["reason"]
    assert "rebuild" in stderr


def test_a_build_with_a_missing_file_is_not_used(tmp_path: Path) -> None:
    _manifest(tmp_path)
    shutil.rmtree(tmp_path / "streams" / "wire")
    state, _ = _probe(OMNISEG_COMPILED_DIR=str(tmp_path))
    assert not state["active"]
    assert "missing" in state["reason"]
