"""A directory of segment definition files, as `omniseg segments apply DIR` reads it."""

from __future__ import annotations

from pathlib import Path


def write_definitions(directory: Path, files: dict[str, str]) -> Path:
    """Make ``directory`` hold exactly ``files`` (name -> YAML text) as its ``*.yaml`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.yaml"):
        old.unlink()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory
