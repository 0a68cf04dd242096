"""Topic records as row tuples: a compiled, logical-type-free Avro body reader that yields nested
tuples instead of dicts, and the decoders of ``events.*`` and ``events.resolved`` built on it.

:class:`EventDecoder` reads a record of the current schema with the compiled reader; a record from an
older writer schema (``schemas/history/``) is resolved by the codec and brought into the same tuple
shape (:func:`as_tuple`), so the sinks and identity resolution fill their rows from one shape.

The sinks and identity resolution spend most of their CPU decoding. fastavro's ``schemaless_reader``
builds a dict per nested record and a datetime per timestamp. This module
generates straight-line Python for one writer schema: records become tuples in field order, enums
their symbol, ``timestamp-millis`` stays the raw long, and ``["null", X]`` unions are a one-byte
check. The binary encoding is the same one fastavro reads; ``tests/unit/wire/test_row_decoder.py``
proves the output equals fastavro's for varied events.

``omniseg compiled build`` also writes the readers of every topic schema into one module
(:func:`generate_module`, locals typed so that the ints stay unboxed) and compiles it with mypyc;
:func:`compile_reader` then returns the compiled reader of a schema with the same content (faster:
docs/decisions/0007-compiled-hot-modules.md) and generates one at run time otherwise.

Pure: no I/O, no Kafka, no ClickHouse.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

from streams.wire.codecs import (
    EVENT_CODEC,
    HEADER_LEN,
    MAGIC,
    RESOLVED_CODEC,
    AvroCodec,
    SerializationError,
)

# The readers of the current schemas, generated into one module and compiled with mypyc by
# ``omniseg compiled build`` (streams/compiled.py); importable only while that build is in use.
PRECOMPILED_MODULE = "omniseg_avro_readers"

_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from

TupleReader = Callable[[bytes, int], tuple[Any, int]]


class CorruptRecord(ValueError):
    """The bytes are not a valid encoding of the schema; the message says where it broke."""


def _varint(buf: bytes, pos: int, first: int) -> tuple[int, int]:
    """The rest of an unsigned LEB128 varint whose first byte (with its continuation bit) was read."""
    result = first & 0x7F
    shift = 7
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CorruptRecord(f"varint longer than 10 bytes at byte {pos}")


class _Compiler:
    def __init__(self, named: dict[str, Any], constant_prefix: str = "") -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named = named
        self.counter = 0
        self.active: set[str] = set()
        self.constant_prefix = constant_prefix
        # Every local's type, declared at the top of the function: nothing for the interpreter, but
        # mypyc (omniseg compiled build) keeps the int ones unboxed.
        self.types: dict[str, str] = {"t": "int", "n": "int", "end": "int", "result": "Any"}

    def var(self, prefix: str = "v", kind: str = "Any") -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.types[name] = kind
        return name

    def constant(self, value: Any) -> str:
        self.counter += 1
        name = f"{self.constant_prefix}SYMS{self.counter}"
        self.constants[name] = value
        return name

    def function(self, name: str) -> str:
        """The reader's source: ``def name(buf: bytes, pos: int) -> tuple[Any, int]``."""
        declared = [f"    {var}: {kind}" for var, kind in sorted(self.types.items())]
        return "\n".join(
            [
                f"def {name}(buf: bytes, pos: int) -> tuple[Any, int]:",
                "    size: int = len(buf)",
                *declared,
                *self.lines,
                "    return result, pos",
            ]
        )

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def long(self, depth: int, target: str) -> None:
        self.emit(depth, "t = buf[pos]")
        self.emit(depth, "pos += 1")
        self.emit(depth, "if t & 0x80:")
        self.emit(depth + 1, "t, pos = _varint(buf, pos, t)")
        self.emit(depth, f"{target} = (t >> 1) ^ -(t & 1)")

    def sized(self, depth: int, target: str, decode: bool) -> None:
        self.long(depth, "n")
        self.emit(depth, "end = pos + n")
        self.emit(depth, "if n < 0 or end > size:")
        self.emit(depth + 1, "raise _Corrupt(f'length {n} at byte {pos} runs past the end')")
        self.emit(depth, f"{target} = buf[pos:end]{'.decode()' if decode else ''}")
        self.emit(depth, "pos = end")

    def node(self, schema: Any, depth: int, target: str) -> None:
        if isinstance(schema, str):
            self.primitive_or_named(schema, depth, target)
        elif isinstance(schema, list):
            self.union(schema, depth, target)
        elif isinstance(schema, dict):
            kind = schema["type"]
            if kind == "record" or kind == "error":
                self.record(schema, depth, target)
            elif kind == "enum":
                name = self.constant(tuple(schema["symbols"]))
                self.long(depth, target)
                self.emit(depth, f"{target} = {name}[{target}] if {target} >= 0 else {name}[len({name})]")
            elif kind == "array":
                self.array(schema["items"], depth, target)
            elif kind == "map":
                self.map(schema["values"], depth, target)
            elif kind == "fixed":
                self.emit(depth, f"end = pos + {int(schema['size'])}")
                self.emit(depth, "if end > size:")
                self.emit(depth + 1, "raise _Corrupt('fixed runs past the end')")
                self.emit(depth, f"{target} = buf[pos:end]")
                self.emit(depth, "pos = end")
            else:
                # A primitive written as {"type": "long", "logicalType": ...}: read the raw value.
                self.node(kind, depth, target)
        else:
            raise TypeError(f"unsupported schema node {schema!r}")

    def primitive_or_named(self, name: str, depth: int, target: str) -> None:
        if name == "null":
            self.emit(depth, f"{target} = None")
        elif name == "boolean":
            self.emit(depth, f"{target} = buf[pos]")
            self.emit(depth, "pos += 1")
            self.emit(depth, f"if {target} > 1:")
            self.emit(depth + 1, f"raise _Corrupt(f'boolean byte {{{target}}} at byte {{pos - 1}}')")
            self.emit(depth, f"{target} = {target} == 1")
        elif name in ("int", "long"):
            self.long(depth, target)
        elif name == "double" or name == "float":
            width, reader = (8, "_DOUBLE") if name == "double" else (4, "_FLOAT")
            self.emit(depth, f"{target} = {reader}(buf, pos)[0]")
            self.emit(depth, f"pos += {width}")
        elif name == "string":
            self.sized(depth, target, decode=True)
        elif name == "bytes":
            self.sized(depth, target, decode=False)
        elif name in self.named:
            if name in self.active:
                raise TypeError(f"recursive schema {name} is not supported by the compiled reader")
            self.node(self.named[name], depth, target)
        else:
            raise TypeError(f"unknown schema type {name!r}")

    def record(self, schema: dict[str, Any], depth: int, target: str) -> None:
        name = schema.get("name", "")
        self.active.add(name)
        names = []
        for field in schema["fields"]:
            var = self.var()
            self.node(field["type"], depth, var)
            names.append(var)
        self.active.discard(name)
        self.emit(depth, f"{target} = ({', '.join(names)}{',' if len(names) == 1 else ''})")

    def union(self, branches: list[Any], depth: int, target: str) -> None:
        # A union index below 64 is one zigzag varint byte: 2 * index. Compare the raw byte.
        if len(branches) > 63:
            raise TypeError("unions of more than 63 branches are not supported by the compiled reader")
        index = self.var("u", "int")
        self.emit(depth, f"{index} = buf[pos]")
        self.emit(depth, "pos += 1")
        for number, branch in enumerate(branches):
            self.emit(depth, f"{'if' if number == 0 else 'elif'} {index} == {2 * number}:")
            if branch == "null":
                self.emit(depth + 1, f"{target} = None")
            else:
                self.node(branch, depth + 1, target)
        self.emit(depth, "else:")
        self.emit(depth + 1, f"raise _Corrupt(f'union index byte {{{index}}} at byte {{pos - 1}}')")

    def blocks(self, depth: int, items: str) -> tuple[int, str]:
        count = self.var("c", "int")
        self.emit(depth, f"{items} = []")
        self.emit(depth, "while True:")
        self.long(depth + 1, count)
        self.emit(depth + 1, f"if {count} == 0:")
        self.emit(depth + 2, "break")
        self.emit(depth + 1, f"if {count} < 0:")
        self.emit(depth + 2, f"{count} = -{count}")
        self.long(depth + 2, "n")  # block size in bytes, not needed to read it
        self.emit(depth + 1, f"if {count} > size:")
        self.emit(depth + 2, f"raise _Corrupt(f'block of {{{count}}} items at byte {{pos}}')")
        self.emit(depth + 1, f"for _ in range({count}):")
        return depth + 2, count

    def array(self, items_schema: Any, depth: int, target: str) -> None:
        items = self.var("a", "list[Any]")
        inner, _ = self.blocks(depth, items)
        item = self.var()
        self.node(items_schema, inner, item)
        self.emit(inner, f"{items}.append({item})")
        self.emit(depth, f"{target} = {items}")

    def map(self, values_schema: Any, depth: int, target: str) -> None:
        pairs = self.var("m", "list[Any]")
        inner, _ = self.blocks(depth, pairs)
        key, value = self.var("k"), self.var()
        self.sized(inner, key, decode=True)
        self.node(values_schema, inner, value)
        self.emit(inner, f"{pairs}.append(({key}, {value}))")
        self.emit(depth, f"{target} = dict({pairs})")


def _collect_named(schema: Any, named: dict[str, Any], namespace: str = "") -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, named, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed") and "name" in schema:
            name = schema["name"]
            space = schema.get("namespace", namespace)
            full = name if "." in name or not space else f"{space}.{name}"
            named[full] = schema
            named[name] = schema
            namespace = full.rsplit(".", 1)[0] if "." in full else space
        for field in schema.get("fields", ()):
            _collect_named(field["type"], named, namespace)
        for key in ("items", "values"):
            if key in schema:
                _collect_named(schema[key], named, namespace)
        if isinstance(kind, dict | list):
            _collect_named(kind, named, namespace)


def compile_reader(schema: Any) -> TupleReader:
    """A function ``read(buf, pos) -> (value, end)`` for one (non-recursive) Avro schema.

    Records become tuples in field order; logical types are ignored (timestamps stay longs). Raises
    :class:`CorruptRecord` (or ``IndexError``/``UnicodeDecodeError``/``struct.error``, which
    :func:`read_body` turns into ``CorruptRecord``) on bytes that do not fit the schema.
    """
    precompiled = _precompiled(schema)
    if precompiled is not None:
        return precompiled
    compiler = _compile(schema)
    scope: dict[str, Any] = {
        "Any": Any,
        "_varint": _varint,
        "_DOUBLE": _DOUBLE,
        "_FLOAT": _FLOAT,
        "_Corrupt": CorruptRecord,
        **compiler.constants,
    }
    source = compiler.function("read")
    exec(compile(source, f"<avro tuple reader for {_name_of(schema)}>", "exec"), scope)
    reader: TupleReader = scope["read"]
    return reader


def _compile(schema: Any, constant_prefix: str = "") -> _Compiler:
    named: dict[str, Any] = {}
    _collect_named(schema, named)
    compiler = _Compiler(named, constant_prefix)
    compiler.node(schema, 1, "result")
    return compiler


def schema_key(schema: Any) -> str:
    """A name for one schema's reader, from the schema's exact content."""
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _precompiled(schema: Any) -> TupleReader | None:
    try:
        module = importlib.import_module(PRECOMPILED_MODULE)
    except ImportError:
        return None
    reader: TupleReader | None = getattr(module, f"read_{schema_key(schema)}", None)
    return reader


def generate_module(schemas: list[Any]) -> str:
    """The source of :data:`PRECOMPILED_MODULE`: one typed reader per schema, for mypyc."""
    parts = [
        '"""Avro tuple readers generated by streams.wire.row_decoder.generate_module: do not edit."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "from streams.wire.row_decoder import _DOUBLE, _FLOAT, _varint",
        "from streams.wire.row_decoder import CorruptRecord as _Corrupt",
        "",
    ]
    done: set[str] = set()
    for schema in schemas:
        key = schema_key(schema)
        if key in done:
            continue
        done.add(key)
        compiler = _compile(schema, constant_prefix=f"_{key}_")
        parts += [f"{name} = {value!r}" for name, value in compiler.constants.items()]
        parts += ["", "", compiler.function(f"read_{key}"), ""]
    return "\n".join(parts)


def read_body(reader: TupleReader, buf: bytes, start: int) -> Any:
    """Decode exactly ``buf[start:]``; raises :class:`CorruptRecord` saying why it could not."""
    try:
        value, end = reader(buf, start)
    except CorruptRecord:
        raise
    except (IndexError, ValueError, struct.error) as exc:  # UnicodeDecodeError is a ValueError
        raise CorruptRecord(f"{type(exc).__name__}: {exc}") from exc
    if end != len(buf):
        raise CorruptRecord(f"{len(buf) - end} trailing bytes after the record")
    return value


def _name_of(schema: Any) -> str:
    return str(schema.get("name", "schema")) if isinstance(schema, dict) else "schema"


def as_tuple(schema: Any, value: Any) -> Any:
    """A fastavro-decoded value (dicts, datetimes) in the compiled reader's shape (tuples, ms longs)."""
    if value is None:
        return None
    if isinstance(schema, list):
        branches = [branch for branch in schema if branch != "null"]
        if len(branches) != 1:
            raise SerializationError("only [null, X] unions are supported in event records")
        return as_tuple(branches[0], value)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return tuple(as_tuple(f["type"], value.get(f["name"])) for f in schema["fields"])
        if kind == "array":
            return [as_tuple(schema["items"], item) for item in value]
        if isinstance(value, datetime):
            return int(value.timestamp() * 1000)
    return value


class EventDecoder:
    """Decodes Avro single-object event bytes into row tuples (current schema field order)."""

    def __init__(self, codec: AvroCodec = EVENT_CODEC) -> None:
        self._codec = codec
        self._schema: dict[str, Any] = codec.current.parsed
        self._fingerprint = codec.current.fingerprint
        self._reader: TupleReader = compile_reader(self._schema)

    @property
    def schema(self) -> dict[str, Any]:
        return self._schema

    def decode(self, data: bytes) -> tuple[Any, ...]:
        """One record as a tuple; raises ``SerializationError`` saying why it is not a valid event."""
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SerializationError(
                f"not an Avro single-object record (expected header C3 01, got {data[:2].hex() or 'nothing'})"
            )
        if data[2:HEADER_LEN] == self._fingerprint:
            try:
                row: tuple[Any, ...] = read_body(self._reader, data, HEADER_LEN)
            except CorruptRecord as exc:
                raise SerializationError(f"corrupt {self._schema['name']} record: {exc}") from exc
            return row
        # An older writer schema (or an unknown fingerprint, which the codec reports clearly).
        resolved = self._codec.decode(data)
        converted: tuple[Any, ...] = as_tuple(self._schema, resolved)
        return converted


class ResolvedDecoder:
    """``events.resolved`` bytes -> a row tuple (compiled fast path for the current schema)."""

    def __init__(self) -> None:
        self._decoder = EventDecoder(RESOLVED_CODEC)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        """Raises ``SerializationError`` saying why the bytes are not a resolved event."""
        return self._decoder.decode(data)
