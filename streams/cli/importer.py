"""`omniseg importer` (placeholder until its module lands)."""

from __future__ import annotations

import click


@click.group("import")
def import_() -> None:
    """Not yet available."""
