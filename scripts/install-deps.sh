#!/usr/bin/env bash
# Installs the Debian 12 packages sks needs to build, test and demonstrate itself.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang
  libssl-dev openssl libsqlite3-dev sqlite3 libtasn1-6-dev libtasn1-bin libcjson-dev
  python3 python3-pytest python3-cryptography python3-asn1crypto
  nginx-light curl util-linux procps
  openssh-client linux-perf  # scripts/bench.sh: ssh-agent (a key in another process) and perf bench (the machine's switch cost)
  pcscd libpcsclite-dev vsmartcard-vpcd
  softhsm2 libengine-pkcs11-openssl opensc   # scripts/bench.sh: libp11 over SoftHSM2; OpenSC judges sks-vhsm
  debhelper lintian dpkg-dev fakeroot man-db  # scripts/package.sh and the man page checks
  libfcgi-dev spawn-fcgi libcurl4-openssl-dev  # sks-issuer (FastCGI) and sks skip enroll (libcurl)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

