"""``omniseg import``: bulk-import a CSV or JSONL export into a channel topic."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from streams.cli.errors import require_kafka
from streams.settings import CHANNELS, get_settings


@click.command("import")
@click.option("--channel", type=click.Choice(CHANNELS), required=True, help="Channel topic to feed.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None, help="Default: from the extension."
)
@click.option("--source", default=None, help="Source name recorded on every event (default: the file name).")
@click.option(
    "--delivery-timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds the broker has to acknowledge each record; past it the import fails.",
)
@click.argument("file", type=click.Path(path_type=Path))
def import_(channel: str, fmt: str | None, source: str | None, delivery_timeout: float, file: Path) -> None:
    """Read FILE (CSV or JSONL), validate each row into an event and produce it to events.<channel>.

    JSONL: one Segment-spec call per line. CSV: a header row; columns messageId, type, event, timestamp,
    userId, anonymousId, email, phone, loyaltyCard, espSubscriberId, crmId, storeId, terminalId,
    transactionId, ean, sku, appProductId, quantity, unitPrice, currency, campaign, properties.X,
    traits.X. Consecutive rows with the same transactionId become one basket. Bad rows go to
    events.invalid with their line number and reason; the import goes on. Without a messageId, one is
    derived from the file name, line and content, so re-importing a file adds no duplicates downstream.

    Success means the broker acknowledged every record; otherwise the import exits non-zero, and running it
    again is safe (the same ids). The progress bar shows bytes read and rows/s.

    Example: omniseg import --channel store deploy/examples/pos_export.csv
    """
    from tqdm import tqdm

    from streams.sources.importer import Importer, ImportFailed, detect_format, open_rows

    settings = get_settings()
    try:
        fmt = detect_format(file, fmt)
        rows, handle = open_rows(file, fmt)
        require_kafka(settings)
        importer = Importer(
            settings,
            channel,  # type: ignore[arg-type]
            source or file.name,
            delivery_timeout_s=delivery_timeout,
        )
        importer.check_broker()
        size = file.stat().st_size
        with handle, tqdm(total=size, unit="B", unit_scale=True, desc=file.name, file=sys.stderr) as bar:
            done = 0
            started = time.monotonic()

            def progress(rows: int) -> None:
                nonlocal done
                done += rows
                rate = done / max(time.monotonic() - started, 1e-9)
                bar.set_postfix_str(f"{done:,} rows, {rate:,.0f} rows/s", refresh=False)
                if not handle.closed:  # the CSV reader closes it once read to the end
                    bar.update(handle.tell() - bar.n)

            summary = importer.run(rows, progress)
            bar.update(size - bar.n)
    except ImportFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except UnicodeDecodeError as exc:
        click.echo(f"error: {file} is not UTF-8 text: {exc}", err=True)
        sys.exit(1)
    click.echo(summary.text())
