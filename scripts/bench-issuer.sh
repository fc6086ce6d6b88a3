#!/usr/bin/env bash
# SKIP enrolments per second through nginx + sks-issuer (bench/issuer_bench.py): prints two
# Markdown table rows. Builds first; needs nginx, spawn-fcgi (scripts/install-deps.sh).
#
#   ./scripts/bench-issuer.sh [--devices N] [--parallel P]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >&2
./scripts/build.sh >&2
SKS_BUILD_DIR=$PWD/build exec /usr/bin/python3 bench/issuer_bench.py "$@"
