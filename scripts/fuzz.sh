#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, UBSan halting) into build-fuzz and
# runs each on its seed corpus fuzz/corpus/<target without fuzz_>. A crash or sanitizer
# report fails the run; the input that caused it is kept in build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [N]        each target N seconds (default 20) on a copy of its corpus (CI)
#   scripts/fuzz.sh --long N [TARGET...]
#                              each target (default: all) N seconds, then the inputs that reach
#                              new coverage are merged into fuzz/corpus/* (-merge=1 keeps only those)
#
# Targets: fuzz_wire, fuzz_wire_provisioned (the dispatcher), fuzz_uri, fuzz_apdu (the SKS card's
# APDU layer), fuzz_pcsc_link (the PC/SC link and the card protocols on it, with a fuzzed card and
# pcscd), fuzz_skip (SKIP packages), fuzz_schsm (the SmartCard-HSM driver with a fuzzed card),
# fuzz_schsm_prkd (the key description rewriter of sks hsm restore), fuzz_channel (sksd's reader of the
# shared-memory channel a client writes), fuzz_provisioning (the provisioning methods behind a
# session MAC, with the target playing the issuer; its seeds: SKS_FUZZ_WRITE_SEEDS=DIR writes them).
set -euo pipefail
cd "$(dirname "$0")/.."
long=0
if [ "${1:-}" = "--long" ]; then
  long=1; shift
  [ -n "${1:-}" ] || { echo "usage: scripts/fuzz.sh --long SECONDS" >&2; exit 2; }
fi
seconds="${1:-20}"
shift || true
targets=("$@")
CC=clang cmake -S . -B build-fuzz -DSKS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
mkdir -p build-fuzz/artifacts

# fuzz_wire_provisioned starts from a provisioned store, made afresh here by the project's
# own provisioning (the tool's process exits with the fuzz build's leak checker off: its
# leaks are not what this run is about, and the ASan build of the tests covers them).
export SKS_FUZZ_TEMPLATE="$PWD/build-fuzz/wire_provisioned_template"
ASAN_OPTIONS=detect_leaks=0 /usr/bin/python3 fuzz/make_template.py --sks build-fuzz/tools/sks/sks \
  --out "$SKS_FUZZ_TEMPLATE"

[ ${#targets[@]} -gt 0 ] || targets=(build-fuzz/fuzz/fuzz_*)
for target in "${targets[@]}"; do
  name=$(basename "$target"); target="build-fuzz/fuzz/$name"; corpus="fuzz/corpus/${name#fuzz_}"
  work=$(mktemp -d); cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  # Requests valid for this template only (its keys are new each time): see make_template.py.
  [ "$name" != fuzz_wire_provisioned ] || cp "$SKS_FUZZ_TEMPLATE"/seeds/* "$work"/
  echo "fuzz: $name for ${seconds}s"
  # The target's status decides (pipefail; grep finding nothing is no failure). The former
  # `grep ... || true; test "${PIPESTATUS[0]}" -eq 0` read the status of `true`, so a crash
  # never failed the run.
  if ! "$target" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$name-" \
    "$work" 2>&1 | { grep -E "^stat::number_of_executed_units|ERROR|SUMMARY" || true; }; then
    echo "fuzz: $name FAILED; the input is in build-fuzz/artifacts/$name-*" >&2
    exit 1
  fi
  if [ "$long" = 1 ]; then
    before=$(ls "$corpus" | wc -l)
    "$target" -merge=1 "$corpus" "$work" >"build-fuzz/$name.merge.log" 2>&1
    echo "fuzz: $name corpus $before -> $(ls "$corpus" | wc -l) inputs"
  fi
  rm -rf "$work"
done
