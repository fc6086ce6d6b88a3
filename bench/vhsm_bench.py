#!/usr/bin/python3
"""The sks provider against OpenSC's PKCS#11 module through libp11's engine, on the SAME virtual
SmartCard-HSM (tools/sks-vhsm in pcscd's vpcd reader) with the SAME keys, made on the card by
OpenSC (pkcs11-tool --keypairgen) and certified by a CA made here with openssl. Counted from the
card's own APDU log (--apdu-log: one line per command APDU the card answered), timed on the wall
clock. scripts/bench.sh runs it and puts its table into bench/RESULTS.md.

    bench/vhsm_bench.py --build build [--seconds 3] [--markdown FILE]

Measured, for each of the two stacks:
  - a new process that loads the key and signs once (`openssl pkeyutl -sign`): APDUs, time;
  - key loads and signatures in one long-running process (build/bench/sks_bench --profile, which
    for sks loads the key with OSSL_STORE and for libp11 with ENGINE_load_private_key): APDUs per
    operation and operations per second, from two runs of different length so that the
    process's set-up (reader, card, login) cancels out of the per-operation figures;
  - TLS 1.3 full handshakes of `openssl s_time -new` against one `openssl s_server` with the
    P-256 key on the card: APDUs per handshake (after one warm-up handshake) and handshakes/s.
sks_bench checks its first result of each kind against the same key in a PEM file: the virtual
card keeps its keys in the clear in its state file (it is a test card), so this script writes
them out for that check, which a real card would not allow.

Only for a bench machine: it starts its own pcscd (socket activation on a socket of its own),
vpcd and the card, and stops them by PID.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "python"))
from pcscrig import PcscRig  # noqa: E402

P11_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
LIBP11_ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"
PIN = "648219"
SO_PIN = "3537363231383830"
KEYS = {"p256": ("01", "EC:prime256v1"), "rsa2048": ("02", "rsa:2048")}
OPS = {"p256-sign": "ECDSA P-256 sign (SHA-256)", "rsa-pss-sign": "RSA-2048 PSS sign (SHA-256)",
       "rsa-pkcs1-sign": "RSA-2048 PKCS#1 v1.5 sign (SHA-256)", "key-load": "P-256 private key load"}


def run(cmd, env, check=True, timeout=300, **kw):
    res = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"vhsm_bench: {' '.join(map(str, cmd))} failed ({res.returncode}):\n"
                         f"{res.stdout.decode(errors='replace')}{res.stderr.decode(errors='replace')}")
    return res


class Bench:
    def __init__(self, rig, card, build, seconds):
        self.rig, self.card, self.build, self.seconds = rig, card, build, seconds
        self.plain = rig.plain_env
        self.pcsc = {"PCSCLITE_CSOCK_NAME": rig.env["PCSCLITE_CSOCK_NAME"]}
        self.sks_env = dict(self.plain, **self.pcsc, OPENSSL_MODULES=build, SKS_DEVICE="pcsc:")
        self.p11_env = dict(self.plain, **self.pcsc, OPENSSL_CONF=rig.path("pkcs11.cnf"),
                            OPENSC_CONF=rig.env["OPENSC_CONF"])
        self.token = None
        self.last_oneshot = {}

    def apdus(self):
        return len(self.card.apdu_lines())

    # ---- the card, its keys, the PEM copies for sks_bench's check
    def prepare(self):
        env, rig = self.rig.env, self.rig
        run(["sc-hsm-tool", "--initialize", "--so-pin", SO_PIN, "--pin", PIN], env)
        ca_key, ca = rig.path("ca.key"), rig.path("ca.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", ca_key, "-out", ca, "-subj", "/CN=sks vhsm bench CA", "-days", "7",
             "-addext", "basicConstraints=critical,CA:TRUE"], self.plain)
        os.makedirs(rig.path("keys"), exist_ok=True)
        p11 = ["pkcs11-tool", "--module", P11_MODULE, "--login", "--pin", PIN]
        for name, (kid, kind) in KEYS.items():
            run([*p11, "--keypairgen", "--key-type", kind, "--id", kid, "--label", name], env)
            pub = rig.path(f"keys/{name}.pub")
            with open(pub, "wb") as f:
                f.write(run(["pkcs15-tool", "--read-public-key", kid], env).stdout)
            crt = rig.path(f"keys/{name}.crt")
            run(["openssl", "x509", "-new", "-subj", f"/CN=bench {name}", "-force_pubkey", pub, "-CA", ca,
                 "-CAkey", ca_key, "-days", "7", "-out", crt], self.plain)
            run(["openssl", "x509", "-in", crt, "-outform", "DER", "-out", crt + ".der"], self.plain)
            run([*p11, "--write-object", crt + ".der", "--type", "cert", "--id", kid, "--label", name], env)
        # The test card's keys in the clear, for sks_bench's reference variant (a) only.
        with open(self.card.state) as f:
            state = json.load(f)
        for name, (kid, _) in KEYS.items():
            der = bytes.fromhex(state["keys"][str(int(kid, 16))]["der"])
            run(["openssl", "pkey", "-inform", "DER", "-out", rig.path(f"keys/{name}.pem")], self.plain, input=der)
        # sks_bench wants all four of its keys as PEM; these two are not on the card (not measured).
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out",
             rig.path("keys/p384.pem")], self.plain)
        run(["openssl", "genpkey", "-algorithm", "ED25519", "-out", rig.path("keys/ed25519.pem")], self.plain)
        with open(rig.path("pin"), "w") as f:
            f.write(PIN)
        out = run(["pkcs11-tool", "--module", P11_MODULE, "-T"], env).stdout.decode()
        m = re.search(r"token label\s*:\s*(.+)", out)
        self.token = m.group(1).strip()
        with open(rig.path("pkcs11.cnf"), "w") as f:
            f.write(f"openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n[engine_section]\n"
                    f"pkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\ndynamic_path = {LIBP11_ENGINE}\n"
                    f"MODULE_PATH = {P11_MODULE}\nPIN = {PIN}\n")

    def p11_uri(self, name):
        return f"pkcs11:token={self.token.replace(' ', '%20').replace('(', '%28').replace(')', '%29')};" \
               f"object={name};type=private"

    # ---- a new process: load the key, sign once
    def one_shot(self, stack):
        dgst, sig = self.rig.path("dgst"), self.rig.path("sig")
        with open(dgst, "wb") as f:
            f.write(os.urandom(32))
        if stack == "sks":
            cmd, env = ["openssl", "pkeyutl", "-sign", "-provider", "default", "-provider", "sks", "-inkey",
                        f"sks:name=p256?pin-value={PIN}", "-in", dgst, "-out", sig], self.sks_env
        else:
            cmd, env = ["openssl", "pkeyutl", "-sign", "-engine", "pkcs11", "-keyform", "engine", "-inkey",
                        self.p11_uri("p256"), "-in", dgst, "-out", sig], self.p11_env
        mark = self.apdus()
        t0 = time.monotonic()
        run(cmd, env)
        t = time.monotonic() - t0
        n = self.apdus() - mark
        self.last_oneshot[stack] = self.ins_histogram(mark)
        res = run(["openssl", "pkeyutl", "-verify", "-certin", "-inkey", self.rig.path("keys/p256.crt"), "-in", dgst,
                   "-sigfile", sig], self.plain)
        assert b"Verified Successfully" in res.stdout
        return n, t * 1000

    # ---- one process, many operations (sks_bench --profile)
    def profile(self, stack, op, seconds):
        args = [os.path.join(self.build, "bench", "sks_bench"), "--dir", self.rig.path(""), "--no-tls", "--no-skip"]
        if stack == "sks":
            args += ["--variants", "d", "--pcsc", "Virtual PCD 00 00", "--sks-pin-file", self.rig.path("pin"),
                     "--profile", f"d:{op}"]
            env = dict(self.plain, **self.pcsc, OPENSSL_MODULES=self.build)
        else:
            args += ["--variants", "e", "--pkcs11", P11_MODULE, "--pkcs11-token", self.token, "--pkcs11-pin", PIN,
                     "--profile", f"e:{op}"]
            env = dict(self.plain, **self.pcsc, OPENSC_CONF=self.rig.env["OPENSC_CONF"])
        mark = self.apdus()
        out = run([*args, "--seconds", str(seconds)], env).stdout.decode()
        m = re.search(r": (\d+) operations in ([\d.]+) s", out)
        return int(m.group(1)), float(m.group(2)), self.ins_histogram(mark)

    def per_operation(self, stack, op):
        """APDUs per operation (in all, and by command) and operations/s, the process's set-up
        cancelled by the difference of two runs of different length."""
        n1, _, h1 = self.profile(stack, op, self.seconds / 4)
        n2, t2, h2 = self.profile(stack, op, self.seconds)
        if n2 <= n1:
            return float("nan"), n2 / t2, {}
        by_ins = {k: (h2.get(k, 0) - h1.get(k, 0)) / (n2 - n1) for k in h2}
        return sum(by_ins.values()), n2 / t2, {k: v for k, v in by_ins.items() if v > 0.005}

    # ---- TLS: openssl s_time against s_server with the key on the card
    def tls(self, stack):
        port = free_port()
        if stack == "sks":
            cmd, env = ["openssl", "s_server", "-provider", "default", "-provider", "sks", "-key",
                        f"sks:name=p256?pin-value={PIN}"], self.sks_env
        else:
            cmd, env = ["openssl", "s_server", "-engine", "pkcs11", "-keyform", "engine", "-key",
                        self.p11_uri("p256")], self.p11_env
        cmd += ["-cert", self.rig.path("keys/p256.crt"), "-accept", f"127.0.0.1:{port}", "-tls1_3", "-quiet"]
        log = open(self.rig.path(f"s_server.{stack}.log"), "wb")
        srv = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port)
            client = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-CAfile",
                      self.rig.path("ca.pem"), "-verify_return_error"]
            out = run(client, self.plain, input=b"").stdout.decode()
            assert "Verify return code: 0 (ok)" in out, out
            mark = self.apdus()
            out = run(["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-tls1_3", "-time",
                       str(max(1, round(self.seconds))), "-CAfile", self.rig.path("ca.pem"), "-verify", "1"],
                      self.plain).stdout.decode()
            apdus = self.apdus() - mark
        finally:
            srv.kill()
            srv.wait()
            log.close()
        m = re.search(r"(\d+) connections in (\d+) real seconds", out)
        n, secs = int(m.group(1)), int(m.group(2))
        return apdus / n, n / secs

    def ins_histogram(self, since):
        counts = {}
        for line in self.card.apdu_lines()[since:]:
            name = line.split()[1]
            counts[name] = counts.get(name, 0) + 1
        return counts


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"vhsm_bench: s_server did not listen on {port}")


def fmt(x, digits=1):
    return "n/a" if x != x else (f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    rows = []
    with PcscRig() as rig:
        card = rig.vhsm(0)
        rig.wait_for_card(0)
        b = Bench(rig, card, build, a.seconds)
        print("vhsm_bench: card, keys, certificates", file=sys.stderr)
        b.prepare()
        stacks = ("sks", "p11")
        res = {s: {} for s in stacks}
        for r in range(a.rounds):
            print(f"vhsm_bench: round {r + 1} of {a.rounds}", file=sys.stderr)
            for s in stacks if r % 2 == 0 else stacks[::-1]:
                res[s].setdefault("oneshot", []).append(b.one_shot(s))
                for op in OPS:
                    res[s].setdefault(op, []).append(b.per_operation(s, op))
                res[s].setdefault("tls", []).append(b.tls(s))
        mark = b.apdus()
        b.tls("p11")
        hist = b.ins_histogram(mark)
    med = lambda v: statistics.median(v)  # noqa: E731

    def cell(s, key, i):
        return med([x[i] for x in res[s][key]])

    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, median of {a.rounds} rounds; "
             "the same virtual SmartCard-HSM (sks-vhsm, pcscd + vpcd), the same keys made on it by OpenSC.",
             "",
             "| | sks provider (`pcsc:`) | libp11 engine + OpenSC PKCS#11 | OpenSC / sks |",
             "|---|--:|--:|--:|"]

    def row(title, key, i, digits=1):
        x, y = cell("sks", key, i), cell("p11", key, i)
        lines.append(f"| {title} | {fmt(x, digits)} | {fmt(y, digits)} | {fmt(y / x if x else float('nan'), 1)}× |")

    row("APDUs for a new process to load the key and sign once (`openssl pkeyutl`)", "oneshot", 0)
    row("its time, ms", "oneshot", 1, 0)
    for op, title in OPS.items():
        row(f"APDUs per {title} in a running process", op, 0, 2)
    for op, title in OPS.items():
        row(f"{title}, per second", op, 1, 0)
    row("APDUs per TLS 1.3 handshake (`s_server`, P-256 key, `s_time -new`)", "tls", 0, 2)
    row("TLS 1.3 handshakes per second", "tls", 1, 0)
    lines += ["", "APDUs per operation by command (last round):", ""]
    for op, title in OPS.items():
        for s, who in (("sks", "sks"), ("p11", "libp11 + OpenSC")):
            h = res[s][op][-1][2]
            lines.append(f"- {title}, {who}: " + (", ".join(f"{k} {v:.2f}" for k, v in sorted(h.items())) or "-"))
    for s, who in (("sks", "sks"), ("p11", "libp11 + OpenSC")):
        lines.append(f"- a new process loading the key and signing once, {who}: " +
                     ", ".join(f"{k} {v}" for k, v in sorted(b.last_oneshot[s].items())))
    lines += ["- a whole `s_time` run against the libp11 + OpenSC `s_server` (its start, key load and login "
              "included): " + ", ".join(f"{k} {v}" for k, v in sorted(hist.items(), key=lambda kv: -kv[1]))]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
