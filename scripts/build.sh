#!/usr/bin/env bash
# Configures and builds sks into ./build (warnings are errors here: the tree must stay clean).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="-Werror" >/dev/null
cmake --build build -j"$(nproc)"
