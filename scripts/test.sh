#!/usr/bin/env bash
# The test command: sets everything up, then lint (ruff), types (mypy) and the whole test suite
# (unit + integration against a real Tansu broker and a real ClickHouse started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_browser_tests.sh
echo "== ruff"; .venv/bin/ruff check streams tests
echo "== ruff format --check"; .venv/bin/ruff format --check streams tests
echo "== mypy"; .venv/bin/mypy streams
echo "== pytest"; .venv/bin/pytest "$@"
