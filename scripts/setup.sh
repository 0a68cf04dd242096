#!/usr/bin/env bash
# Installs everything omniseg needs on a fresh Debian machine (Python 3.11, pip and apt only):
# ClickHouse server from Debian (for the local stack), ZooKeeper (for the cluster tests), a virtualenv
# in .venv, and the pinned packages.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' 2>/dev/null; then
  say "error: omniseg needs Python 3.11 ($PYTHON is $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11."
  exit 1
fi

if [ ! -x /usr/bin/clickhouse ] && [ ! -x /usr/sbin/clickhouse-server ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { say "error: ClickHouse is missing and I am not root; run: apt-get install clickhouse-server"; exit 1; }
    SUDO=sudo
  fi
  say "installing clickhouse-server from Debian (local ClickHouse 18.16)"
  $SUDO apt-get update -qq
  # The package's own service is not used (omniseg runs its own server process on its own ports).
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clickhouse-server >/dev/null
fi

# ZooKeeper (and the Java runtime it pulls in): the ClickHouse cluster tests run their own ZooKeeper
# process beside two ClickHouse replicas (tests/integration/warehouse/test_cluster.py).
if [ ! -f /usr/share/java/zookeeper.jar ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { say "error: ZooKeeper is missing and I am not root; run: apt-get install zookeeper"; exit 1; }
    SUDO=sudo
  fi
  say "installing zookeeper from Debian (for the ClickHouse cluster tests, which run their own ZooKeeper process)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq zookeeper >/dev/null
  # The package's own service is not used; on a machine with systemd it would hold port 2181.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now zookeeper >/dev/null 2>&1 || true
  fi
fi

# nginx: the TLS proxy test runs deploy/tls/omniseg.conf.template in front of real servers.
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { say "error: nginx is missing and I am not root; run: apt-get install nginx-light"; exit 1; }
    SUDO=sudo
  fi
  say "installing nginx-light from Debian (for the TLS proxy test, which runs its own nginx process)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null
  # The package's own service is not used; on a machine with systemd it would hold port 80.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

if [ ! -x .venv/bin/python ]; then
  say "creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.omniseg-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing pinned Python packages (constraints.txt)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
  echo "$want" > "$stamp"
fi
# The per-event modules compiled with mypyc (streams/compiled.py): less CPU per event (BENCHMARKS.md).
# Optional: without a C compiler, or with OMNISEG_PURE_PYTHON=1, omniseg runs as plain Python.
if [ "${OMNISEG_PURE_PYTHON:-}" != 1 ] && ! .venv/bin/omniseg compiled status >/dev/null 2>&1; then
  include=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  cc=$(.venv/bin/python -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')
  if ! command -v "$cc" >/dev/null || [ ! -f "$include/Python.h" ]; then
    if [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; then
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
      say "installing a C compiler and Python's headers (gcc python3-dev) to compile the hot modules"
      { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc python3-dev >/dev/null; } \
        || say "could not install gcc/python3-dev; omniseg runs as plain Python"
    fi
  fi
  if command -v "$cc" >/dev/null && [ -f "$include/Python.h" ]; then
    .venv/bin/omniseg compiled build || say "omniseg runs as plain Python (more CPU per event)"
  else
    say "no C compiler or Python headers ($cc, $include/Python.h): omniseg runs as plain Python"
  fi
fi
say "ready: .venv/bin/omniseg --help ($(.venv/bin/omniseg compiled status 2>/dev/null | cut -d';' -f1 || true))"
