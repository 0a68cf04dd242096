"""`omniseg migrate` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("migrate")
def migrate() -> None:
    """Not yet available."""
