"""`omniseg dev` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("dev")
def dev() -> None:
    """Not yet available."""
