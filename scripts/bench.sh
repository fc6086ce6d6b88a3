#!/usr/bin/env bash
# The benchmark (bench/sks_bench.c), in one command, as root on Debian 12: installs what it
# needs, builds, prepares everything in a temporary directory, prints a Markdown table and
# writes it to bench/RESULTS.md (with the date and the machine).
#
#   ./scripts/bench.sh [sks_bench options]      e.g. --only p256-sign,tls --rounds 3
#   BENCH_KEEP=1 ./scripts/bench.sh ...          keeps the temporary directory (logs, keys, stores)
#   BENCH_README=1 ./scripts/bench.sh ...        also puts the table into README.md (Benchmarks)
#   BENCH_NO_VHSM=1 ./scripts/bench.sh ...       leaves out the SmartCard-HSM comparison
#
# Prepared here: four keys made once by openssl (P-256, P-384, RSA-2048, Ed25519) with
# self-signed certificates; the same key material imported into an sks store (sks import)
# and into a SoftHSM2 token (pkcs11-tool --write-object); sksd serving the store; a private pcscd
# (socket activation on a socket of ours, so a system pcscd is left alone) with vpcd and the
# virtual card sks-vcard on the same store; a CA for SKIP packages. sks_bench starts nginx itself
# (Debian's, on 127.0.0.1, one configuration per variant in the temporary directory). OpenSSH's
# ssh-agent holds the P-256 key too: the peer of the contention rows (a key in another process). The run includes P-256
# signing on a busy machine and with as many clients as cores and twice as many (--no-contention
# leaves it out). Every process started here is stopped by its PID on exit. Then
# bench/vhsm_bench.py compares sks with OpenSC's PKCS#11 module (through libp11's engine) on one
# virtual SmartCard-HSM, with its own pcscd and card.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# stdout carries the table alone
./scripts/install-deps.sh >&2
./scripts/build.sh >&2

BUILD=$ROOT/build
SKS=$BUILD/tools/sks/sks
SKSD=$BUILD/tools/sksd/sksd
VCARD=$BUILD/tools/sks-vcard/sks-vcard
BENCH=$BUILD/bench/sks_bench
SOFTHSM_MODULE=/usr/lib/softhsm/libsofthsm2.so
VPCD_DRIVER=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
ENGINES_DIR=$(openssl version -e | sed 's/^ENGINESDIR: "\(.*\)"$/\1/')
READER="Virtual PCD 00 00"

W=$(mktemp -d /tmp/sks-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${BENCH_KEEP:-}" ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
log() { echo "bench: $*" >&2; }

# ---- keys, made once, the same material everywhere
log "keys and certificates in $W"
mkdir -p "$W/keys"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/keys/p256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$W/keys/p384.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$W/keys/rsa2048.pem" 2>/dev/null
openssl genpkey -algorithm ED25519 -out "$W/keys/ed25519.pem" 2>/dev/null
for k in p256 p384 rsa2048 ed25519; do
  openssl req -x509 -new -key "$W/keys/$k.pem" -subj "/CN=bench $k" -days 30 -out "$W/keys/$k.crt" 2>/dev/null
done
openssl req -x509 -new -newkey EC -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" \
  -subj "/CN=sks bench SKIP CA" -days 30 -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# ---- the sks store, and sksd serving it
"$SKS" --store "$W/store.db" init >/dev/null
for k in p256 p384 rsa2048 ed25519; do
  "$SKS" --store "$W/store.db" import --name "$k" --key "$W/keys/$k.pem" --cert "$W/keys/$k.crt" >/dev/null
done
"$SKSD" --store "$W/store.db" --socket "$W/sksd.sock" >"$W/sksd.log" 2>&1 &
PIDS+=($!)
echo $! >"$W/sksd.pid" # the nginx rows count sksd's CPU per handshake

# ---- SoftHSM2 token with the same keys, for libp11's engine
NA=()
export SOFTHSM2_CONF=$W/softhsm2.conf
mkdir -p "$W/tokens"
printf 'directories.tokendir = %s/tokens/\nobjectstore.backend = file\nlog.level = ERROR\n' "$W" >"$SOFTHSM2_CONF"
PKCS11=()
if softhsm2-util --init-token --free --label sks-bench --so-pin 5678 --pin 1234 >/dev/null; then
  # pkcs11-tool (OpenSC) writes the same key material with the usages each operation needs
  # (softhsm2-util --import gives EC keys no CKA_DERIVE). Not Ed25519: libp11 0.4.12 has no
  # EdDSA, and an EdDSA object in the token makes it fail to list any private key.
  id=1
  for k in p256 p384 rsa2048; do
    case $k in rsa2048) usage=(--usage-sign --usage-decrypt) ;; *) usage=(--usage-sign --usage-derive) ;; esac
    openssl pkey -in "$W/keys/$k.pem" -pubout -out "$W/keys/$k.pub" 2>/dev/null
    { pkcs11-tool --module "$SOFTHSM_MODULE" --token-label sks-bench --login --pin 1234 --write-object "$W/keys/$k.pem" \
        --type privkey --id "0$id" --label "$k" "${usage[@]}" \
      && pkcs11-tool --module "$SOFTHSM_MODULE" --token-label sks-bench --login --pin 1234 \
        --write-object "$W/keys/$k.pub" --type pubkey --id "0$id" --label "$k" "${usage[@]}"; } >/dev/null 2>&1 \
      || log "pkcs11-tool cannot write the $k key into the token"
    id=$((id + 1))
  done
  PKCS11=(--pkcs11 "$SOFTHSM_MODULE" --pkcs11-token sks-bench --pkcs11-pin 1234)
  cat >"$W/pkcs11.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINES_DIR/pkcs11.so
MODULE_PATH = $SOFTHSM_MODULE
EOF
else
  NA+=(--na "e:softhsm2-util --init-token failed")
fi

# ---- a private pcscd with vpcd, and the virtual card on the store
PCSC=()
if [ ! -x "$VCARD" ]; then
  NA+=(--na "d:sks-vcard is not built")
elif [ ! -e "$VPCD_DRIVER" ] || ! command -v pcscd >/dev/null; then
  NA+=(--na "d:pcscd or vsmartcard-vpcd missing")
else
  # vpcd listens on a pair of ports (one per slot): find a free pair
  PORT=$(python3 -c '
import socket
for _ in range(50):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()')
  mkdir -p "$W/reader.conf.d"
  printf 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:%s\nLIBPATH %s\nCHANNELID %s\n' "$PORT" "$VPCD_DRIVER" \
    "$PORT" >"$W/reader.conf.d/vpcd"
  export PCSCLITE_CSOCK_NAME=$W/pcscd.comm
  # socket activation: our listening socket on fd 3, LISTEN_PID = pcscd (exec keeps the PID)
  python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(64)
if s.fileno() != 3: os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execvp(sys.argv[2], sys.argv[2:])' "$PCSCLITE_CSOCK_NAME" pcscd -f -c "$W/reader.conf.d" >"$W/pcscd.log" 2>&1 &
  PIDS+=($!)
  "$VCARD" --store "$W/store.db" --host 127.0.0.1 --port "$PORT" 2>"$W/vcard.log" &
  PIDS+=($!)
  PCSC=(--pcsc "$READER")
fi

# ---- the peer for a key in another process: OpenSSH's ssh-agent holding the P-256 key
AGENT=()
if command -v ssh-agent >/dev/null && command -v ssh-add >/dev/null; then
  ssh-agent -D -a "$W/agent.sock" >"$W/agent.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ -S "$W/agent.sock" ] && break; sleep 0.05; done
  if SSH_AUTH_SOCK=$W/agent.sock ssh-add -q "$W/keys/p256.pem" 2>>"$W/agent.log"; then
    AGENT=(--ssh-agent "$W/agent.sock")
  else
    log "ssh-add failed (see $W/agent.log): no ssh-agent column"
  fi
fi

for _ in $(seq 100); do [ -S "$W/sksd.sock" ] && break; sleep 0.05; done
[ -S "$W/sksd.sock" ] || NA+=(--na "c:sksd did not start")

log "running the benchmark (about 2-3 minutes)"
OPENSSL_MODULES=$BUILD "$BENCH" --dir "$W" --sks "$SKS" "${PCSC[@]}" "${PKCS11[@]}" "${AGENT[@]}" "${NA[@]}" \
  --markdown "$W/results.md" "$@"

VHSM_MD=
if [ -z "${BENCH_NO_VHSM:-}" ]; then
  log "the virtual SmartCard-HSM: sks against OpenSC's PKCS#11 module (about 3-4 minutes)"
  if /usr/bin/python3 "$ROOT/bench/vhsm_bench.py" --build "$BUILD" --markdown "$W/vhsm.md" >&2; then
    VHSM_MD=$W/vhsm.md
  else
    log "bench/vhsm_bench.py failed: its section is left out"
  fi
fi

# hand-written comparisons below the "bench:kept" marker survive a new run
KEPT=$(sed -n '/^<!-- bench:kept -->$/,$p' "$ROOT/bench/RESULTS.md" 2>/dev/null || true)
{
  echo "# sks benchmark results"
  echo
  echo "Written by \`./scripts/bench.sh\` (bench/sks_bench.c); the README's Benchmarks section explains the variants."
  echo
  cat "$W/results.md"
  if [ -n "$VHSM_MD" ]; then
    echo
    echo "## A SmartCard-HSM: sks against OpenSC's PKCS#11 module"
    echo
    echo "Written by \`bench/vhsm_bench.py\`; the analysis is below, under \"SmartCard-HSM: the figures explained\"."
    echo
    cat "$VHSM_MD"
  fi
  if [ -n "$KEPT" ]; then echo; echo "$KEPT"; fi
} >"$ROOT/bench/RESULTS.md"
log "written to bench/RESULTS.md"
if [ -n "${BENCH_README:-}" ]; then
  # the README carries the same figures between its bench:begin and bench:end markers
  awk -v results="$W/results.md" '
    /<!-- bench:end -->/ { skip = 0 }
    !skip { print }
    /<!-- bench:begin -->/ { while ((getline line < results) > 0) print line; skip = 1 }
  ' "$ROOT/README.md" >"$W/README.md" && cat "$W/README.md" >"$ROOT/README.md"
  log "README.md updated"
fi
