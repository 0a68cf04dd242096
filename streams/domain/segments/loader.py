"""Read segment definitions from YAML text, with errors that name the file, the segment and the field.

A file holds one definition (a mapping) or several (a list, or a mapping with a ``segments`` list).
Across files: ids are unique, ``segment`` references name defined segments, and there are no cycles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from streams.domain.segments.model import CONDITION_KEYS, SegmentDefinition


class DefinitionError(ValueError):
    """Invalid definitions; ``problems`` lists each one as ``file: segment 'id': field: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class CycleError(DefinitionError):
    """Segments that refer to each other in a loop (``cycle`` lists them, first one repeated last)."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__([f"segments refer to each other in a cycle: {' -> '.join(cycle)}"])


def _field_path(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        # pydantic puts the discriminator tag after each condition slot; users never wrote it.
        if (
            isinstance(item, str)
            and item in CONDITION_KEYS
            and (previous in ("when", "not") or isinstance(previous, int))
        ):
            previous = "__tag__"
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
        previous = item
    return "".join(parts) or "(top level)"


def parse_documents(text: str, *, source: str) -> list[tuple[str, dict[str, Any]]]:
    """The raw definition mappings of one YAML file, each with a label for errors."""
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise DefinitionError([f"{source}: not valid YAML: {exc}"]) from exc
    raw: list[Any] = []
    for document in loaded:
        if document is None:
            continue
        if isinstance(document, dict) and "segments" in document and len(document) == 1:
            document = document["segments"]
        raw.extend(document if isinstance(document, list) else [document])
    found: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            problems.append(
                f"{source}: definition #{index + 1}: expected a mapping, got {type(item).__name__}"
            )
            continue
        found.append((f"{source}: segment {item.get('id', f'#{index + 1}')!r}", item))
    if problems:
        raise DefinitionError(problems)
    return found


def load_definitions(files: Iterable[tuple[str, str]]) -> list[SegmentDefinition]:
    """Validate every definition of ``files`` (pairs of source name and YAML text), all or nothing."""
    problems: list[str] = []
    definitions: list[SegmentDefinition] = []
    origin: dict[str, str] = {}
    for source, text in files:
        try:
            documents = parse_documents(text, source=source)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        for label, raw in documents:
            try:
                definition = SegmentDefinition.model_validate(raw)
            except ValidationError as exc:
                for error in exc.errors():
                    message = error["msg"].removeprefix("Value error, ")
                    problems.append(f"{label}: {_field_path(error['loc'])}: {message}")
                continue
            if definition.id in origin:
                problems.append(
                    f"{label}: id {definition.id!r} is already defined in {origin[definition.id]}"
                )
                continue
            origin[definition.id] = source
            definitions.append(definition)
    problems.extend(check_references(definitions, origin))
    if problems:
        raise DefinitionError(problems)
    return definitions


def check_references(
    definitions: Sequence[SegmentDefinition], origin: dict[str, str] | None = None
) -> list[str]:
    """Unknown ``segment`` references and reference cycles, as error lines."""
    origin = origin or {}
    by_id = {d.id: d for d in definitions}
    problems: list[str] = []
    for definition in definitions:
        for ref in sorted(definition.references()):
            where = origin.get(definition.id, "definitions")
            if ref not in by_id:
                problems.append(
                    f"{where}: segment {definition.id!r}: when: refers to unknown segment {ref!r}"
                )
            elif by_id[ref].kind == "suppression":
                problems.append(
                    f"{where}: segment {definition.id!r}: when: refers to {ref!r}, a per-product suppression "
                    "audience; use an event condition with a product filter instead"
                )
    if problems:
        return problems
    try:
        evaluation_order(definitions)
    except CycleError as exc:
        first = exc.cycle[0]
        path = " -> ".join(f"{sid} ({origin.get(sid, 'definitions')})" for sid in exc.cycle)
        problems.append(
            f"{origin.get(first, 'definitions')}: segment {first!r}: when: segments refer to each other "
            f"in a cycle: {path}"
        )
    return problems


def evaluation_order(definitions: Sequence[SegmentDefinition]) -> list[str]:
    """Segment ids so that every segment comes after those it refers to; raises on a cycle."""
    by_id = {d.id: d for d in definitions}
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(segment_id: str, path: list[str]) -> None:
        if state.get(segment_id) == 2:
            return
        if state.get(segment_id) == 1:
            raise CycleError([*path[path.index(segment_id) :], segment_id])
        state[segment_id] = 1
        for ref in sorted(by_id[segment_id].references()):
            if ref in by_id:
                visit(ref, [*path, segment_id])
        state[segment_id] = 2
        order.append(segment_id)

    for segment_id in sorted(by_id):
        visit(segment_id, [])
    return order
