"""`omniseg bench` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("bench")
def bench() -> None:
    """Not yet available."""
