"""`omniseg demo` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("demo")
def demo() -> None:
    """Not yet available."""
