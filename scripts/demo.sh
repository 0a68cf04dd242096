#!/usr/bin/env bash
# The demo command: sets everything up, starts the local stack, and runs the main job: a realistic
# four-channel event stream through the collector and Kafka into ClickHouse (the days before today as
# history, then today's traffic live), then prints what landed. The stack and the worker keep running
# afterwards; `.venv/bin/omniseg dev down` stops them (or pass --down).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/omniseg demo "$@"
