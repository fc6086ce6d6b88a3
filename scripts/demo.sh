#!/usr/bin/env bash
# The main job on the embedded store: create a store, generate keys of several kinds inside
# it, import a key made elsewhere (PEM and PKCS#12), and list what the store holds.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
SKS="$PWD/build/tools/sks/sks"
work=$(mktemp -d /tmp/sks-demo.XXXXXX)
export SKS_STORE="$work/store.db"

echo "== sks init"
"$SKS" init
echo "== sks generate"
"$SKS" generate --name web --algorithm P-256 --subject "/CN=web.example"
"$SKS" generate --name signer --algorithm RSA-2048 --subject "/CN=signer" --pin 4711
"$SKS" generate --name ed --algorithm Ed25519
echo "== sks import (a key made by openssl, PEM and PKCS#12)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -subj "/CN=imported" \
  -keyout "$work/imp.key" -out "$work/imp.crt" -days 30 2>/dev/null
"$SKS" import --name imported --key "$work/imp.key" --cert "$work/imp.crt"
openssl pkcs12 -export -inkey "$work/imp.key" -in "$work/imp.crt" -passout pass:demo -out "$work/imp.p12"
"$SKS" import --name from-p12 --pkcs12 "$work/imp.p12" --passin demo 2>/dev/null \
  || echo "(a second import of the same certificate is refused, as the SKS spec demands)"
shred -u "$work/imp.key"
echo "== sks list"
"$SKS" list
echo "store kept in $work"
