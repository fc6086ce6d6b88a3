#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for N seconds (default 20) on its
# seed corpus. A crash or sanitizer report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
CC=clang cmake -S . -B build-fuzz -DSKS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
for target in build-fuzz/fuzz/fuzz_*; do
  name=$(basename "$target"); corpus="fuzz/corpus/${name#fuzz_}"
  work=$(mktemp -d); cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  echo "fuzz: $name for ${seconds}s"
  "$target" -max_total_time="$seconds" -print_final_stats=1 "$work" 2>&1 | grep -E "^stat::number_of_executed_units|ERROR|SUMMARY" || true
  test "${PIPESTATUS[0]}" -eq 0
  rm -rf "$work"
done
