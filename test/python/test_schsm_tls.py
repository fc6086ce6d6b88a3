"""TLS with the private keys on a SmartCard-HSM: the virtual card (tools/sks-vhsm) in pcscd's
vpcd reader, keys generated on it by OpenSC (pkcs11-tool --keypairgen), certified by a test CA
made with openssl, the certificates written to the card by pkcs11-tool --write-object.

- `openssl s_server -key sks:name=...` (provider) against a plain `openssl s_client` that
  verifies the chain to the test CA: TLS 1.2 and 1.3, EC and RSA (RSA-PSS in TLS 1.3).
- nginx with `ssl_certificate_key engine:sks:sks:name=...` (the sks ENGINE), two workers,
  requiring client certificates from the test CA; curl authenticating with its key on the card
  (--engine sks --key-type ENG).

The card's APDU log is the witness: each handshake must show exactly one SIGN APDU of the
server's key (with the key's card id) and, once a process has verified the PIN, nothing else:
no VERIFY, SELECT, ENUMERATE or READ BINARY per handshake. A key that was not on the card
would show no SIGN at all.

    SKS_BUILD_DIR=$PWD/build /usr/bin/python3 -m pytest test/python/test_schsm_tls.py
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pcscrig import PcscRig  # noqa: E402
import provtools as pt  # noqa: E402

P11_MODULE = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
PIN = "648219"
SO_PIN = "3537363231383830"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
CURL = shutil.which("curl")
# label, card key id (CKA_ID = the SIGN APDU's P1), pkcs11-tool key type, subject CN
KEYS = {
    "srv-ec": (1, "EC:prime256v1", "localhost"),
    "srv-rsa": (2, "rsa:2048", "localhost"),
    "cli-ec": (3, "EC:prime256v1", "curl client on the card"),
}
SIGN, SELECT, VERIFY, ENUMERATE, READ_BINARY = "68", "A4", "20", "58", "B1"
# The SIGN APDU's algorithm byte (P2): ECDSA on a host hash, the card's own RSA-PSS, raw RSA.
ALG_ECDSA, ALG_PSS = "70", "40"


def run(cmd, env, check=True, timeout=60, **kw):
    res = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise AssertionError(pt.describe(cmd, res))
    return res


class Card:
    """The rig, the card and its APDU log, the CA and the certificates."""

    def __init__(self, rig, card):
        self.rig, self.card = rig, card
        self.ca_key, self.ca = rig.path("ca.key"), rig.path("ca.pem")
        self.env = dict(rig.env, OPENSSL_MODULES=str(pt.BUILD), SKS_DEVICE="pcsc:")

    def cert(self, label):
        return self.rig.path(label + ".crt")

    def mark(self):
        return len(self.card.apdu_lines())

    def apdus(self, since, sw=None):
        """(INS, P1, P2) of each command APDU the card answered since the mark (only those
        it answered with status word `sw`, if given)."""
        out = []
        for line in self.card.apdu_lines()[since:]:
            f = line.split()
            fields = dict(x.split("=", 1) for x in f[2:] if "=" in x)
            if sw is None or fields.get("sw") == sw:
                out.append((f[0], fields.get("p1"), fields.get("p2")))
        return out


def make_key(c, label):
    kid, key_type, cn = KEYS[label]
    env = c.rig.env
    p11 = ["pkcs11-tool", "--module", P11_MODULE, "--login", "--pin", PIN]
    run([*p11, "--keypairgen", "--key-type", key_type, "--id", f"{kid:02x}", "--label", label], env)
    pub = c.rig.path(label + ".pub")
    with open(pub, "wb") as f:
        f.write(run(["pkcs15-tool", "--read-public-key", f"{kid:02x}"], env).stdout)
    # The test CA certifies the card's public key (openssl x509 -new -force_pubkey).
    san = c.rig.path(label + ".ext")
    with open(san, "w") as f:
        f.write("subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    run(["openssl", "x509", "-new", "-subj", f"/O=sks tests/CN={cn}", "-force_pubkey", pub, "-CA", c.ca,
         "-CAkey", c.ca_key, "-days", "7", "-extfile", san, "-out", c.cert(label)], c.rig.plain_env)
    der = c.rig.path(label + ".crt.der")
    run(["openssl", "x509", "-in", c.cert(label), "-outform", "DER", "-out", der], c.rig.plain_env)
    run([*p11, "--write-object", der, "--type", "cert", "--id", f"{kid:02x}", "--label", label], env)


@pytest.fixture(scope="module")
def card():
    pt.require_build()
    with PcscRig() as rig:
        vhsm = rig.vhsm(0)
        rig.wait_for_card(0)
        run(["sc-hsm-tool", "--initialize", "--so-pin", SO_PIN, "--pin", PIN], rig.env)
        c = Card(rig, vhsm)
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", c.ca_key, "-out", c.ca, "-subj", "/CN=sks SmartCard-HSM TLS test CA", "-days", "7",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
            rig.plain_env)
        for label in KEYS:
            make_key(c, label)
        yield c


def card_uri(label):
    return f"sks:name={label}?pin-value={PIN}"


# ---------------------------------------------------------------------------------------------
# openssl s_server with the key on the card
# ---------------------------------------------------------------------------------------------

def s_client(c, port, version, *extra):
    """A plain s_client (default provider only) that must verify the server to the test CA."""
    res = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
               "-CAfile", c.ca, "-verify_return_error", "-verify_hostname", "localhost", f"-{version}", *extra],
              c.rig.plain_env, input=b"", check=False, timeout=30)
    return res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")


CASES = {
    "ec-tls1_2": ("srv-ec", "tls1_2", "ECDSA", ALG_ECDSA),
    "ec-tls1_3": ("srv-ec", "tls1_3", "ECDSA", ALG_ECDSA),
    "rsa-tls1_2": ("srv-rsa", "tls1_2", "RSA-PSS", ALG_PSS),
    "rsa-tls1_3": ("srv-rsa", "tls1_3", "RSA-PSS", ALG_PSS),
}


@pytest.mark.parametrize("case", list(CASES))
def test_s_server_key_on_card(card, tmp_path, case):
    """Three handshakes with one s_server: each verified by s_client to the test CA; the first
    selects the card, reads it and verifies the PIN; the other two cost one SIGN APDU each."""
    label, version, sigtype, alg = CASES[case]
    kid = f"{KEYS[label][0]:02X}"
    port = pt.free_port()
    server = pt.Daemon(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "3",
                        "-provider", "default", "-provider", "sks", "-cert", card.cert(label),
                        "-key", card_uri(label), f"-{version}"], env=card.env, log=tmp_path / "s_server.log")
    try:
        server.wait_for(r"^ACCEPT", timeout=30)
        first = card.mark()
        outputs = []
        for i in range(3):
            if i == 1:
                warm = card.mark()
            outputs.append(s_client(card, port, version))
        after_first = card.apdus(warm)
        everything = card.apdus(first)
        # s_server exits after its third connection: closing its link SELECTs the application
        # once more so the card's PIN verification ends with the process (docs/pcsc.md). That
        # last SELECT may already be in the log; nothing else may be.
        if after_first and after_first[-1][:3] == ("A4", "04", "00"):
            after_first = after_first[:-1]
    finally:
        server.stop()
    proto = "TLSv1.3" if version == "tls1_3" else "TLSv1.2"
    for out in outputs:
        assert "Verify return code: 0 (ok)" in out, out + server.output()
        assert re.search(rf"^New, {proto}, Cipher is", out, re.M), out
        assert re.search(r"^subject=.*CN = localhost", out, re.M), out
        assert re.search(rf"^Peer signature type: {sigtype}$", out, re.M), out
    # The first handshake did the card's session set-up; the PIN was verified once.
    assert [a for a in everything if a[0] == VERIFY and a[1:] == ("00", "81")], everything
    assert after_first == [(SIGN, kid, alg)] * 2, after_first


def test_s_server_rsa_pkcs1_tls12(card, tmp_path):
    """A TLS 1.2 client offering only RSA PKCS#1 v1.5: the host pads, the card signs raw."""
    port = pt.free_port()
    server = pt.Daemon(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
                        "-provider", "default", "-provider", "sks", "-cert", card.cert("srv-rsa"),
                        "-key", card_uri("srv-rsa"), "-tls1_2"], env=card.env, log=tmp_path / "s_server.log")
    try:
        server.wait_for(r"^ACCEPT", timeout=30)
        mark = card.mark()
        out = s_client(card, port, "tls1_2", "-sigalgs", "RSA+SHA256")
        signs = [a for a in card.apdus(mark) if a[0] == SIGN]
    finally:
        server.stop()
    assert "Verify return code: 0 (ok)" in out and re.search(r"^Peer signature type: RSA$", out, re.M), out
    assert signs == [(SIGN, "02", "20")], signs


# ---------------------------------------------------------------------------------------------
# nginx (sks ENGINE) with its key on the card, curl with its key on the card
# ---------------------------------------------------------------------------------------------

# The http block after the common part (provtools.nginx_conf).
NGINX_HTTP = """\
    log_format tls '$pid|$ssl_client_verify|$ssl_client_s_dn|$ssl_protocol|$ssl_session_reused|$request_uri';
    server {{
        listen 127.0.0.1:{port} ssl reuseport;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key engine:sks:sks:name=srv-ec;
        ssl_client_certificate {ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        # Every request on its own connection, so each one is a full handshake.
        keepalive_timeout 0;
        access_log {dir}/access.log tls;
        location / {{
            return 200 "client dn: $ssl_client_s_dn\\nverify: $ssl_client_verify\\n";
        }}
    }}
"""

OPENSSL_CONF = """\
openssl_conf = openssl_init
[openssl_init]
providers = provider_section
engines = engine_section
[provider_section]
default = default_section
sks = sks_section
[default_section]
activate = 1
[sks_section]
activate = 1
module = {provider}
sks-device = pcsc:
pin = {pin}
[engine_section]
sks = sks_engine_section
[sks_engine_section]
dynamic_path = {engine}
engine_id = sks
init = 1
"""


@pytest.fixture(scope="module")
def nginx(card, tmp_path_factory):
    if NGINX is None or CURL is None:
        pytest.skip("nginx or curl is not installed (scripts/install-deps.sh)")
    d = tmp_path_factory.mktemp("nginx")
    cnf = d / "openssl.cnf"
    # The PIN in the provider's configuration: nginx has no way to pass one with the key.
    cnf.write_text(OPENSSL_CONF.format(provider=pt.PROVIDER, engine=pt.ENGINE, pin=PIN))
    port = pt.free_port()
    conf = d / "nginx.conf"
    conf.write_text(pt.nginx_conf(d, NGINX_HTTP.format(dir=d, port=port, cert=card.cert("srv-ec"), ca=card.ca),
                                  env=["PCSCLITE_CSOCK_NAME"]))
    env = dict(card.rig.plain_env, OPENSSL_CONF=str(cnf), PCSCLITE_CSOCK_NAME=card.rig.env["PCSCLITE_CSOCK_NAME"])
    # A client key in a file, certified by the same CA: its handshakes touch the card only
    # on nginx's side.
    soft_key, soft_cert = d / "soft.key", d / "soft.crt"
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", soft_key],
        card.rig.plain_env)
    run(["openssl", "pkey", "-in", soft_key, "-pubout", "-out", d / "soft.pub"], card.rig.plain_env)
    run(["openssl", "x509", "-new", "-subj", "/O=sks tests/CN=curl with a file key", "-force_pubkey",
         d / "soft.pub", "-CA", card.ca, "-CAkey", card.ca_key, "-days", "7", "-out", soft_cert], card.rig.plain_env)
    res = run([NGINX, "-t", "-p", d, "-c", conf, "-e", d / "error.log"], env, check=False)
    assert res.returncode == 0, pt.describe(["nginx -t"], res) + (d / "error.log").read_text(errors="replace")
    daemon = pt.Daemon([NGINX, "-p", d, "-c", conf, "-e", d / "error.log"], env=env, log=d / "nginx.out")
    try:
        assert pt.wait_port(port, daemon.proc), daemon.output() + (d / "error.log").read_text(errors="replace")
        yield {"port": port, "dir": d, "cnf": cnf, "soft": (soft_key, soft_cert)}
    finally:
        daemon.stop()
        errors = (d / "error.log").read_text(errors="replace") if (d / "error.log").exists() else ""
        assert "exited on signal" not in errors, errors[-4000:]


def curl(card, nginx, paths, *key_args):
    """One curl process fetching `paths`, each over a new connection (nginx closes every one,
    curl reuses no session: every request is a full handshake); returns the bodies and -v."""
    port = nginx["port"]
    urls = [f"https://localhost:{port}{p}" for p in paths]
    env = dict(card.rig.plain_env, OPENSSL_CONF=str(nginx["cnf"]),
               PCSCLITE_CSOCK_NAME=card.rig.env["PCSCLITE_CSOCK_NAME"])
    res = run([CURL, "-sS", "-v", "--max-time", "30", "--cacert", card.ca, "--resolve", f"localhost:{port}:127.0.0.1",
               "--no-sessionid", *key_args, *urls], env, timeout=90)
    return res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")


def access_lines(nginx, want, timeout=10):
    """The access log's lines for the paths in `want` (nginx writes them after the response)."""
    p = nginx["dir"] / "access.log"
    deadline = time.monotonic() + timeout
    while True:
        lines = p.read_text().splitlines() if p.exists() else []
        got = [line for line in lines if line.rsplit("|", 1)[-1] in want]
        if len(got) >= len(want) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_nginx_key_on_card_one_sign_per_handshake(card, nginx):
    """Warm both workers (each reconnects to the card after fork and verifies the PIN once),
    then six full handshakes: six SIGN APDUs of nginx's key and not one other APDU."""
    soft_key, soft_cert = nginx["soft"]
    key_args = ["--key", str(soft_key), "--cert", str(soft_cert)]
    pids = set()
    for i in range(20):
        path = f"/warm/{i}"
        curl(card, nginx, [path], *key_args)
        (line,) = access_lines(nginx, [path])
        pids.add(line.split("|")[0])
        if len(pids) == 2 and i >= 1:
            break
    assert len(pids) == 2, f"two nginx workers should have served the warm-up requests: {pids}"
    mark = card.mark()
    paths = [f"/count/{i}" for i in range(6)]
    body, verbose = curl(card, nginx, paths, *key_args)
    apdus = card.apdus(mark)
    assert body.count("verify: SUCCESS\n") == 6 and "CN=curl with a file key" in body, body + verbose
    assert "SSL certificate verify ok" in verbose and re.search(r"subject: .*CN=localhost", verbose), verbose
    lines = access_lines(nginx, paths)
    assert len(lines) == 6 and all(line.split("|")[1] == "SUCCESS" and line.split("|")[4] == "." for line in lines), lines
    assert apdus == [(SIGN, "01", ALG_ECDSA)] * 6, apdus


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_curl_key_on_card_nginx_verifies(card, nginx, tls):
    """curl signs with its key on the card (sks ENGINE); nginx verifies its certificate to the
    test CA; curl verifies nginx's. Four full handshakes in one curl process: four signatures
    by each key, and the card read at most once (curl's key load), not per handshake. curl's
    SELECT when it connects ends the PIN verification nginx's worker relied on, so that
    worker's next SIGN is refused (6982) and repeated after one VERIFY: the count is of the
    SIGN APDUs the card carried out."""
    paths = [f"/card/{tls}/{i}" for i in range(4)]
    mark = card.mark()
    body, verbose = curl(card, nginx, paths, "--engine", "sks", "--key-type", "ENG", "--key", card_uri("cli-ec"),
                         "--cert", card.cert("cli-ec"), f"--tlsv{tls}", "--tls-max", tls)
    apdus = card.apdus(mark)
    signs = [a for a in card.apdus(mark, sw="9000") if a[0] == SIGN]
    assert body.count("verify: SUCCESS\n") == 4, body + verbose
    assert "CN=curl client on the card" in body, body
    assert "SSL certificate verify ok" in verbose, verbose
    lines = access_lines(nginx, paths)
    assert len(lines) == 4 and all(line.split("|")[1:4] == ["SUCCESS", "CN=curl client on the card,O=sks tests",
                                                               f"TLSv{tls}"] for line in lines), lines
    assert signs.count((SIGN, "03", ALG_ECDSA)) == 4, apdus
    assert signs.count((SIGN, "01", ALG_ECDSA)) == 4, apdus
    assert len(signs) == 8, apdus
    assert [a[0] for a in apdus].count(ENUMERATE) <= 1, apdus
