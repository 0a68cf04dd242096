"""`omniseg compiled`: build or inspect the mypyc-compiled hot modules (streams/compiled.py)."""

from __future__ import annotations

from pathlib import Path

import click

from streams import compiled as compiled_modules


@click.group("compiled")
def compiled() -> None:
    """The per-event modules compiled with mypyc (faster; used only while they match the sources)."""


@compiled.command("build")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=compiled_modules.DEFAULT_DIR,
    show_default=True,
    help="Where to write the build (the worker looks in OMNISEG_COMPILED_DIR, default this).",
)
def build(directory: Path) -> None:
    """Compile the hot modules (needs mypy from the test extra, a C compiler and Python's headers)."""
    try:
        compiled_modules.build(directory, echo=lambda message: click.echo(message, err=True))
    except RuntimeError as exc:
        raise click.ClickException(f"compiling failed (omniseg still runs as plain Python): {exc}") from exc


@compiled.command("status")
def status() -> None:
    """Say whether this process runs the compiled modules, and if not, why. Exit 1 if not."""
    state = compiled_modules.status()
    click.echo(f"{state.describe()}; build directory {state.directory}")
    if not state.active:
        raise SystemExit(1)
