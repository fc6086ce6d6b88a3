#!/usr/bin/env bash
# Builds the Debian packages (sks-provider, sks, sksd) with debhelper from the tracked files
# of this checkout, in a scratch directory, and leaves the .deb files in ./dist (or $1).
# debhelper rather than CPack: dh gives the maintainer scripts, shlibs dependencies,
# hardening flags and a lintian-clean layout that CPack's DEB generator leaves to us.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-dist}")"
./scripts/install-deps.sh
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/sks" "$out"
# tar reads the names itself: xargs would split a long list over several tar runs, whose
# second archive the reading tar never takes (it stops at the first end-of-archive) and so
# gets SIGPIPE
git ls-files -z | tar --null --files-from=- -cf - | tar -xf - -C "$work/sks"
(cd "$work/sks" && DEB_BUILD_OPTIONS="parallel=$(nproc) ${DEB_BUILD_OPTIONS:-}" dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) \
    || { tail -40 "$work/build.log"; echo "package: dpkg-buildpackage failed" >&2; exit 1; }
mv "$work"/*.deb "$out"/
ls "$out"/*.deb
