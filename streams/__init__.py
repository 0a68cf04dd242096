"""omniseg: real-time customer segments over Kafka, with the history in ClickHouse."""

from streams.compiled import install as _install_compiled

_install_compiled()  # the mypyc-built hot modules, if built and matching their sources
