"""Reading definition files (segments, destinations, use cases): YAML documents to labelled mappings.

A file holds one definition (a mapping), several (a list), or a mapping with a single plural key (e.g.
``segments``, ``destinations``, ``usecases``) holding a list, across one or more YAML documents. Each
mapping gets a label, ``<file>: <noun> '<id>'``, that starts every problem line about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


class DocumentError(ValueError):
    """Definition files that cannot be read; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def mappings(text: str, *, source: str, plural: str, noun: str) -> list[tuple[str, dict[str, Any]]]:
    """The raw mappings of one YAML file, each with its label for problem lines."""
    try:
        loaded = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise DocumentError([f"{source}: not valid YAML: {exc}"]) from exc
    raw: list[Any] = []
    for document in loaded:
        if document is None:
            continue
        if isinstance(document, dict) and plural in document and len(document) == 1:
            document = document[plural]
        raw.extend(document if isinstance(document, list) else [document])
    found: list[tuple[str, dict[str, Any]]] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            problems.append(f"{source}: {noun} #{index + 1}: expected a mapping, got {type(item).__name__}")
            continue
        found.append((f"{source}: {noun} {item.get('id', f'#{index + 1}')!r}", item))
    if problems:
        raise DocumentError(problems)
    return found


def field_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as ``field.sub[2].leaf``."""
    path = "".join(f"[{item}]" if isinstance(item, int) else f".{item}" for item in loc)
    return path.removeprefix(".") or "(top level)"


def read_dir(path: Path, *, what: str) -> list[tuple[str, str]]:
    """``(file name, text)`` of every ``*.yaml`` / ``*.yml`` file in ``path``, in sorted order."""
    if not path.is_dir():
        raise DocumentError([f"{path}: not a directory of {what} files"])
    files: list[tuple[str, str]] = []
    problems: list[str] = []
    for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        try:
            files.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file}: cannot read: {exc}")
    if problems:
        raise DocumentError(problems)
    return files
