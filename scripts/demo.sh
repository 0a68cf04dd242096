#!/usr/bin/env bash
# The demo command: sets everything up, starts the local stack, and runs the main job: a realistic
# four-channel event stream through the collector and Kafka into ClickHouse, then prints what landed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/omniseg demo "$@"
