"""`omniseg collector` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("collector")
def collector() -> None:
    """Not yet available."""
