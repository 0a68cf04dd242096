"""`omniseg worker` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("worker")
def worker() -> None:
    """Not yet available."""
