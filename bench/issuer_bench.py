"""Enrolments per second through nginx + sks-issuer (spawn-fcgi, 4 processes) with 8 keys per
package (2 archived to an RSA and an EC recovery certificate), the CA key in sksd
(`sks:name=factory-ca`): the same set-up as test/python/test_skip_issuer.py.

  server: parallel HTTPS clients post requests of Python-made factory keys (the issuer's side alone)
  end to end: `sks skip enroll` on fresh device stores in parallel (request, package, import, confirm)

    /usr/bin/python3 bench/issuer_bench.py [--devices N] [--parallel P]     (scripts/bench-issuer.sh)
"""

import argparse
import base64
import http.client
import os
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test" / "python"))

import issuertools as it  # noqa: E402
import skipissuer as si  # noqa: E402
import skiptools as st  # noqa: E402

PROFILE = """
[profile device]
subject = O=sks bench
key = P-256 sign
key = P-256 tls
key = P-384 sign384
key = Ed25519 id
key = Ed25519 id2
key = brainpoolP256r1 bp
key = P-256 encrypt archive
key = P-384 escrow archive
recovery-cert = {rsa}
recovery-cert = {ec}
"""


def post_one(service, ctx, token, body):
    conn = http.client.HTTPSConnection("127.0.0.1", service.port, context=ctx, timeout=300)
    conn.request("POST", "/.well-known/est/skip/simpleenroll", body,
                 {"Authorization": f"Bearer {token}", "Content-Type": "application/pkcs10"})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
    return len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=32)
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sks-issuer-bench-"))
    service = it.Service(base / "svc", PROFILE, children=4)
    try:
        ctx = ssl.create_default_context(cafile=str(service.server_cert))
        bodies = [base64.encodebytes(si.make_request(si.new_key("secp256r1"), f"bench {i}"))
                  for i in range(args.devices)]
        tokens = [service.add_token(f"srv{i}") for i in range(args.devices)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda tb: post_one(service, ctx, *tb), zip(tokens, bodies)))
        server = args.devices / (time.monotonic() - t0)

        stores = []
        for i in range(args.devices):
            d = base / f"dev{i}"
            d.mkdir()
            stores.append(st.SkipStore(d))
        tokens = [service.add_token(f"dev{i}") for i in range(args.devices)]

        def enroll(pair):
            s, t = pair
            subprocess.run([str(a) for a in it.enroll_args(service, s, t)], check=True, capture_output=True,
                           env=st.plain_env())
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(enroll, zip(stores, tokens)))
        e2e = args.devices / (time.monotonic() - t0)
        print(f"| SKIP enrolment through nginx + sks-issuer, 8 keys per package (2 archived), CA key in sksd: "
              f"issuer side ({args.parallel} parallel HTTPS clients) | {server:.1f}/s |")
        print(f"| the same end to end (`sks skip enroll`: request, package, import of 8 keys, confirm; "
              f"{args.parallel} devices at once) | {e2e:.1f}/s |")
    finally:
        service.stop()
        if not os.environ.get("BENCH_KEEP"):
            import shutil
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
