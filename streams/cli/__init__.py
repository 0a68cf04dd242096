"""The ``omniseg`` command. Each subcommand lives in its own module beside this one."""

from __future__ import annotations

import click

from streams.cli import (
    api,
    audiences,
    bench,
    catalog,
    collector,
    compiled,
    demo,
    destinations,
    dev,
    errors,
    importer,
    kpi,
    migrate,
    person,
    person_erase,
    retention,
    segments,
    topics,
    usecases,
    worker,
)

# Long-running processes keep the client libraries' connection logs; every other command reports a
# failure in one line of its own (streams/cli/errors.py).
_SERVERS = {"worker", "collector", "api", "demo", "bench"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="omniseg")
@click.pass_context
def main(ctx: click.Context) -> None:
    """omniseg: single customer view and real-time segments on Kafka and ClickHouse."""
    if ctx.invoked_subcommand not in _SERVERS:
        errors.quiet_client_logs()


main.add_command(dev.dev)
main.add_command(migrate.migrate)
main.add_command(topics.topics)
main.add_command(collector.collector)
main.add_command(worker.worker)
main.add_command(importer.import_)
main.add_command(demo.demo)
main.add_command(bench.bench)
main.add_command(person.person)
person.person.add_command(person_erase.erase)
person.person.add_command(person_erase.requests)
main.add_command(kpi.kpi)
main.add_command(api.api)
main.add_command(segments.segments)
main.add_command(catalog.catalog)
main.add_command(compiled.compiled)
main.add_command(destinations.destinations)
main.add_command(audiences.audiences)
main.add_command(usecases.usecases)
main.add_command(retention.retention)
