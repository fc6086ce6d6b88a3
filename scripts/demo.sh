#!/usr/bin/env bash
# The main job on the embedded store, end to end:
#   keys into the store (generated inside it, and imported from PEM and PKCS#12),
#   openssl signing with a store key and the default provider verifying,
#   nginx serving TLS with its key in the store and requiring client certificates,
#   curl authenticating with a client key it never sees,
#   a SKIP round trip: request from the device, package from a factory CA, import, and curl
#   authenticating with the injected key.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
work=$(mktemp -d /tmp/sks-demo.XXXXXX)
chmod 755 "$work"
# nginx's workers and the sksd client below run as nobody, who may not reach a checkout under
# /root or a 0700 temporary directory: the programs and modules they run are copied beside the
# demo's files (they link no library of the build tree).
B="$work/build"
install -d -m 755 "$B" "$B/engines" "$B/tools/sks" "$B/tools/sksd"
install -m 755 build/sks.so "$B/sks.so"
install -m 755 build/engines/sks.so "$B/engines/sks.so"
install -m 755 build/tools/sks/sks "$B/tools/sks/sks"
install -m 755 build/tools/sksd/sksd "$B/tools/sksd/sksd"
SKS="$B/tools/sks/sks"
export SKS_STORE="$work/store/store.db" OPENSSL_MODULES="$B" OPENSSL_ENGINES="$B/engines"
P=(-provider default -provider sks)
step() { printf '\n== %s\n' "$*"; }

step "a new store, its master key and device identity"
"$SKS" init
step "keys generated inside the store, certified by the tool's local issuer CA"
"$SKS" generate --name web --algorithm P-256 --subject "/CN=localhost"
"$SKS" generate --name client --algorithm RSA-2048 --subject "/CN=demo client"
# Secrets come from files (or stdin, or a terminal prompt), never from the command line, where ps shows them.
(umask 077; echo 4711 > "$work/signer.pin"; echo demo > "$work/p12.pass")
"$SKS" generate --name signer --algorithm Ed25519 --subject "/CN=demo signer" --pin-file "$work/signer.pin"
openssl x509 -in "$SKS_STORE.issuer-ca.pem" -out "$work/ca.pem"
"$SKS" cert --name web > "$work/web.pem"

step "keys made elsewhere, imported (PEM, then PKCS#12); the PEM is shredded afterwards"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -subj "/CN=imported" \
  -keyout "$work/imp.key" -out "$work/imp.crt" -days 30 2>/dev/null
"$SKS" import --name imported --key "$work/imp.key" --cert "$work/imp.crt"
openssl req -x509 -newkey rsa:2048 -nodes -subj "/CN=from pkcs12" -keyout "$work/p12.key" \
  -out "$work/p12.crt" -days 30 2>/dev/null
openssl pkcs12 -export -inkey "$work/p12.key" -in "$work/p12.crt" -passout "file:$work/p12.pass" -out "$work/imp.p12"
"$SKS" import --name from-p12 --pkcs12 "$work/imp.p12" --passin-file "$work/p12.pass"
shred -u "$work/imp.key" "$work/p12.key"
"$SKS" list

step "SKIP: keys made by a factory CA reach the store without ever being in clear on the way"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=demo factory CA" \
  -keyout "$work/factory-ca.key" -out "$work/factory-ca.pem" -days 30 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
"$SKS" skip request --curve P-256 --subject "CN=device-17" --trust "$work/factory-ca.pem" \
  --out "$work/skip-request.pem"
"$SKS" skip issue --request "$work/skip-request.pem" --ca-key "$work/factory-ca.key" \
  --ca-cert "$work/factory-ca.pem" --key-type P-256 --key-type Ed25519 --out "$work/skip-package.der"
"$SKS" skip import --trust "$work/factory-ca.pem" "$work/skip-package.der"
"$SKS" skip import --trust "$work/factory-ca.pem" "$work/skip-package.der"   # again: nothing changes
cat "$work/ca.pem" "$work/factory-ca.pem" > "$work/client-cas.pem"

step "openssl signs with store keys; the default provider alone verifies"
echo "the main job of sks" > "$work/msg"
openssl pkeyutl "${P[@]}" -sign -inkey "sks:name=web" -rawin -digest sha256 -in "$work/msg" -out "$work/msg.sig"
openssl x509 -in "$work/web.pem" -pubkey -noout > "$work/web.pub"
openssl pkeyutl -verify -pubin -inkey "$work/web.pub" -rawin -digest sha256 -in "$work/msg" -sigfile "$work/msg.sig"
openssl pkeyutl "${P[@]}" -sign -inkey "sks:name=signer?pin-source=file:$work/signer.pin" -rawin -in "$work/msg" -out "$work/ed.sig"
"$SKS" cert --name signer | openssl x509 -pubkey -noout > "$work/ed.pub"
openssl pkeyutl -verify -pubin -inkey "$work/ed.pub" -rawin -in "$work/msg" -sigfile "$work/ed.sig"

step "sksd: the store stays root's; nginx's workers (nobody) reach their key through the daemon"
# The key web is given to nobody; the other keys stay root's and nobody cannot even list them.
mkdir -p "$work/run" "$work/nginx/tmp"
chmod 755 "$work/run"
"$B/tools/sksd/sksd" --store "$SKS_STORE" --socket "$work/run/sksd.sock" --mode 0660 --group nogroup \
  --allow-gid nogroup --key-owner web=nobody 2> "$work/sksd.log" &
sksd_pid=$!
trap 'kill $sksd_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -S "$work/run/sksd.sock" ] && break; sleep 0.1; done
setpriv --reuid=nobody --regid=nogroup --clear-groups env SKS_DEVICE="unix:$work/run/sksd.sock" "$SKS" list

step "nginx: TLS with its key in the store (through the sks engine and sksd), client certificates required"
port=$((20000 + RANDOM % 20000))
cat > "$work/engine.cnf" <<CNF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
sks = sks_section
[sks_section]
engine_id = sks
dynamic_path = $B/engines/sks.so
init = 1
CNF
cat > "$work/nginx/nginx.conf" <<CONF
daemon off;
user nobody nogroup;
worker_processes 1;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
env SKS_DEVICE;
env OPENSSL_MODULES;
events { worker_connections 16; }
http {
  access_log $work/nginx/access.log;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp; fastcgi_temp_path $work/nginx/tmp;
  uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_protocols TLSv1.2 TLSv1.3;   # nginx 1.22's default stops at TLS 1.2
    ssl_certificate $work/web.pem;
    ssl_certificate_key engine:sks:sks:name=web;
    ssl_client_certificate $work/client-cas.pem;
    ssl_verify_client on;
    location / { return 200 "hello \$ssl_client_s_dn, over \$ssl_protocol\n"; }
  }
}
CONF
SKS_DEVICE="unix:$work/run/sksd.sock" OPENSSL_CONF="$work/engine.cnf" nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!
trap 'kill $nginx_pid $sksd_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

step "curl authenticates with a client key it never sees (sks engine)"
OPENSSL_CONF="$work/engine.cnf" curl -sS --cacert "$work/ca.pem" --resolve "localhost:$port:127.0.0.1" \
  --engine sks --key-type ENG --key "sks:name=client" --cert-type ENG --cert 'sks\:name=client' \
  "https://localhost:$port/"
step "curl authenticates with the key injected by SKIP"
OPENSSL_CONF="$work/engine.cnf" curl -sS --cacert "$work/ca.pem" --resolve "localhost:$port:127.0.0.1" \
  --engine sks --key-type ENG --key "sks:name=device-17 key 1 P-256" \
  --cert-type ENG --cert 'sks\:name=device-17 key 1 P-256' "https://localhost:$port/"
step "without a client certificate nginx refuses"
curl -sS --cacert "$work/ca.pem" --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/" | grep -om1 "No required SSL certificate was sent"
kill $nginx_pid; wait $nginx_pid 2>/dev/null || true
kill $sksd_pid; wait $sksd_pid 2>/dev/null || true
trap - EXIT
step "done; everything is in $work"
