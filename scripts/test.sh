#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test: CTest (C), the libFuzzer targets
# briefly, then pytest (integration with real programs). Exit status is non-zero if any fails.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh

echo "== CTest"
(cd build && ctest --output-on-failure)

echo "== fuzz (brief)"
./scripts/fuzz.sh "${SKS_FUZZ_SECONDS:-20}"

echo "== pytest"
SKS_BUILD_DIR="$PWD/build" /usr/bin/python3 -m pytest -q test/python
