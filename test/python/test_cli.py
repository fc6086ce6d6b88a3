"""The `sks` key commands end to end: generate, import, list, cert, export, delete, pin.

Each test gets a fresh store. Keys and certificates to import are made with the `openssl`
CLI; results are checked with the `openssl` CLI and Python's `cryptography`, never with the
tool itself. Run with Debian's interpreter:

    /usr/bin/python3 -m pytest test/python/test_cli.py
"""

import json
import os
import pty
import select
import stat
import subprocess
import termios
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

# CLI name -> what `openssl x509 -text` shows for such a public key. (The openssl CLI rather
# than `cryptography` checks key material: Debian's cryptography 38 lacks brainpoolP320r1.)
ALGORITHMS = {
    "P-256": "ASN1 OID: prime256v1",
    "P-384": "ASN1 OID: secp384r1",
    "P-521": "ASN1 OID: secp521r1",
    "brainpoolP256r1": "ASN1 OID: brainpoolP256r1",
    "brainpoolP320r1": "ASN1 OID: brainpoolP320r1",
    "brainpoolP384r1": "ASN1 OID: brainpoolP384r1",
    "brainpoolP512r1": "ASN1 OID: brainpoolP512r1",
    "RSA-2048": "Public-Key: (2048 bit)",
    "RSA-3072": "Public-Key: (3072 bit)",
    "RSA-4096": "Public-Key: (4096 bit)",
    "Ed25519": "ED25519 Public-Key",
}

JSON_FIELDS = {"handle", "name", "algorithm", "subject", "sha256", "app_usage", "pin_protected",
               "pin_blocked", "symmetric", "endorsed"}


def _sks_binary():
    build = os.environ.get("SKS_BUILD_DIR", "/work/main/build")
    return os.path.join(build, "tools", "sks", "sks")


class Cli:
    """Runs `sks --store DB ...` and the openssl CLI in one directory."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.dir = workdir
        self.store = workdir / "store.db"

    def run(self, *args, ok=True, input=None):
        res = subprocess.run([self.binary, "--store", str(self.store), *map(str, args)],
                             capture_output=True, text=True, timeout=120, cwd=self.dir, input=input)
        if ok and res.returncode != 0:
            pytest.fail(f"`sks {' '.join(map(str, args))}` failed ({res.returncode}):\n"
                        f"{res.stdout}{res.stderr}", pytrace=False)
        return res

    def fail(self, *args, expect=(), input=None):
        """Runs a command that must fail; returns stderr after checking it names the problem."""
        res = self.run(*args, ok=False, input=input)
        assert res.returncode != 0, f"`sks {' '.join(map(str, args))}` succeeded but must fail"
        assert res.stderr.startswith("sks: "), f"no error message: {res.stderr!r}"
        for word in expect:
            assert word in res.stderr, f"error for {args} does not mention {word!r}: {res.stderr!r}"
        return res.stderr

    def openssl(self, *args, input=None):
        res = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=120, cwd=self.dir,
                             input=input)
        assert res.returncode == 0, f"openssl {' '.join(map(str, args))}: {res.stderr.decode()}"
        return res.stdout

    def public_der_of_cert(self, cert):
        """SubjectPublicKeyInfo DER of a certificate, as openssl sees it."""
        pem = self.openssl("x509", "-pubkey", "-noout",
                           input=cert.public_bytes(serialization.Encoding.PEM))
        return self.openssl("pkey", "-pubin", "-outform", "DER", input=pem)

    def public_der_of_key(self, key_pem):
        return self.openssl("pkey", "-pubout", "-outform", "DER", input=key_pem)

    def private_der(self, key_pem):
        """PKCS#8 DER of a PEM private key, as openssl re-encodes it."""
        return self.openssl("pkey", "-outform", "DER", input=key_pem)

    def keys(self):
        return {k["name"]: k for k in json.loads(self.run("list", "--json").stdout)}

    def cert(self, name, chain=False):
        pem = self.run("cert", "--name", name, *(["--chain"] if chain else [])).stdout
        end = "-----END CERTIFICATE-----"
        return [x509.load_pem_x509_certificate((block + end).encode()) for block in pem.split(end)[:-1]]

    def self_signed(self, stem, newkey, subject):
        """openssl req -x509 with a new key: returns (key path, cert path)."""
        key, crt = self.dir / f"{stem}.key", self.dir / f"{stem}.crt"
        self.openssl("req", "-x509", "-newkey", newkey[0], *newkey[1:], "-nodes", "-keyout", key,
                     "-out", crt, "-subj", subject, "-days", "30")
        return key, crt


@pytest.fixture
def cli(tmp_path):
    binary = _sks_binary()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"the sks binary is missing: {binary} (build it or set SKS_BUILD_DIR)", pytrace=False)
    c = Cli(binary, tmp_path)
    c.run("init")
    return c


def openssl_fingerprint(cli, cert_path):
    out = cli.openssl("x509", "-in", cert_path, "-noout", "-fingerprint", "-sha256").decode().strip()
    return out.split("=", 1)[1]


# ---------------------------------------------------------------------------------- generate


def test_generate_every_algorithm_lists_and_certifies(cli):
    for alg in ALGORITHMS:
        out = cli.run("generate", "--name", f"key {alg}", "--algorithm", alg).stdout
        assert f"name:   key {alg}" in out
    keys = cli.keys()
    assert set(keys) == {f"key {a}" for a in ALGORITHMS}
    ca = x509.load_pem_x509_certificate((cli.dir / "store.db.issuer-ca.pem").read_bytes())
    for alg, marker in ALGORITHMS.items():
        k = keys[f"key {alg}"]
        assert set(k) == JSON_FIELDS
        assert k["algorithm"] == alg
        assert k["subject"] == f"CN=key {alg}"
        assert (k["app_usage"], k["pin_protected"], k["pin_blocked"], k["symmetric"], k["endorsed"]) == \
            ("universal", False, False, False, [])
        path = cli.cert(k["name"], chain=True)
        assert len(path) == 2 and path[1] == ca
        pem_file = cli.dir / "ee.pem"
        pem_file.write_bytes(path[0].public_bytes(serialization.Encoding.PEM))
        assert marker in cli.openssl("x509", "-in", pem_file, "-noout", "-text").decode()
        assert k["sha256"] == openssl_fingerprint(cli, pem_file)
        cli.openssl("verify", "-CAfile", cli.dir / "store.db.issuer-ca.pem", pem_file)


def test_issuer_ca_file_is_private(cli):
    cli.run("generate", "--name", "a", "--algorithm", "P-256")
    mode = stat.S_IMODE(os.stat(cli.dir / "store.db.issuer-ca.pem").st_mode)
    assert mode == 0o600, oct(mode)


def test_generate_subject_usage_and_sorted_endorsements(cli):
    sha256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    none_hash = "https://webpki.github.io/sks/algorithm#ecdsa.none"
    cli.run("generate", "--name", "signer", "--algorithm", "P-384", "--subject", "CN=Alice\\, Jr., O=Example, C=SE",
            "--app-usage", "signature", "--endorse", none_hash, "--endorse", sha256, "--endorse", none_hash)
    k = cli.keys()["signer"]
    assert k["endorsed"] == sorted({sha256, none_hash})
    assert k["app_usage"] == "signature"
    subject = cli.cert("signer")[0].subject
    assert subject.rfc4514_string() == "CN=Alice\\, Jr.,O=Example,C=SE"
    assert k["subject"] == "CN=Alice\\, Jr.,O=Example,C=SE"


def test_generated_key_is_not_exportable_by_default(cli):
    cli.run("generate", "--name", "locked-in", "--algorithm", "Ed25519")
    cli.fail("export", "--name", "locked-in", expect=["non-exportable"])
    cli.run("generate", "--name", "portable", "--algorithm", "P-256", "--exportable")
    pem = cli.run("export", "--name", "portable").stdout.encode()
    assert cli.public_der_of_key(pem) == cli.public_der_of_cert(cli.cert("portable")[0])


# ---------------------------------------------------------------------------------- import


@pytest.mark.parametrize("algorithm,newkey", [
    ("P-256", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256")),
    ("brainpoolP320r1", ("ec", "-pkeyopt", "ec_paramgen_curve:brainpoolP320r1")),
    ("RSA-2048", ("rsa:2048",)),
    ("Ed25519", ("ed25519",)),
])
def test_import_pem_then_export_gives_the_same_key(cli, algorithm, newkey):
    key_path, crt_path = cli.self_signed("in", newkey, "/CN=imported")
    out = cli.run("import", "--name", "imp", "--key", key_path, "--cert", crt_path, "--exportable").stdout
    fingerprint = openssl_fingerprint(cli, crt_path)
    assert f"sha256: {fingerprint}" in out
    k = cli.keys()["imp"]
    assert k["sha256"] == fingerprint
    assert k["subject"] == "CN=imported"
    assert k["app_usage"] == "universal"
    assert k["algorithm"] == algorithm
    exported = cli.dir / "exported.pem"
    cli.run("export", "--name", "imp", "--out", exported)
    assert stat.S_IMODE(os.stat(exported).st_mode) == 0o600
    assert exported.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert cli.private_der(exported.read_bytes()) == cli.private_der(key_path.read_bytes())
    cli.fail("export", "--name", "imp", "--out", exported, expect=["already exists"])


def test_import_algorithm_names(cli):
    for stem, newkey, want in [("e", ("ec", "-pkeyopt", "ec_paramgen_curve:P-521"), "P-521"),
                               ("b", ("ec", "-pkeyopt", "ec_paramgen_curve:brainpoolP512r1"), "brainpoolP512r1"),
                               ("r", ("rsa:3072",), "RSA-3072")]:
        key_path, crt_path = cli.self_signed(stem, newkey, f"/CN={stem}")
        cli.run("import", "--name", stem, "--key", key_path, "--cert", crt_path)
        assert cli.keys()[stem]["algorithm"] == want


def test_import_pkcs12_with_chain(cli):
    ca_key, ca_crt = cli.self_signed("ca", ("ec", "-pkeyopt", "ec_paramgen_curve:P-384"), "/CN=Test CA")
    leaf_key = cli.dir / "leaf.key"
    cli.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", leaf_key)
    csr = cli.openssl("req", "-new", "-key", leaf_key, "-subj", "/O=Example/CN=leaf")
    leaf_crt = cli.dir / "leaf.crt"
    cli.openssl("x509", "-req", "-CA", ca_crt, "-CAkey", ca_key, "-days", "10", "-out", leaf_crt, input=csr)
    p12 = cli.dir / "leaf.p12"
    cli.openssl("pkcs12", "-export", "-inkey", leaf_key, "-in", leaf_crt, "-certfile", ca_crt, "-out", p12,
                "-passout", "pass:s3cret")
    cli.fail("import", "--name", "p12", "--pkcs12", p12, "--passin", "wrong", expect=["leaf.p12", "password"])
    cli.run("import", "--name", "p12", "--pkcs12", p12, "--passin", "s3cret", "--exportable",
            "--app-usage", "authentication")
    k = cli.keys()["p12"]
    assert k["sha256"] == openssl_fingerprint(cli, leaf_crt)
    assert k["subject"] == "CN=leaf,O=Example"
    assert k["app_usage"] == "authentication"
    path = cli.cert("p12", chain=True)
    assert [c.subject.rfc4514_string() for c in path] == ["CN=leaf,O=Example", "CN=Test CA"]
    exported = cli.run("export", "--name", "p12").stdout.encode()
    assert cli.private_der(exported) == cli.private_der(leaf_key.read_bytes())
    # An independent parser agrees: the exported key is the leaf certificate's key.
    key = serialization.load_pem_private_key(exported, None)
    assert key.public_key().public_numbers() == path[0].public_key().public_numbers()


# ---------------------------------------------------------------------------------- PIN, delete


def test_pin_lifecycle(cli):
    cli.run("generate", "--name", "pinned", "--algorithm", "P-256", "--pin", "1234", "--puk", "87654321",
            "--pin-retries", "2", "--exportable")
    k = cli.keys()["pinned"]
    assert (k["pin_protected"], k["pin_blocked"]) == (True, False)
    # No --auth: refused before the device counts an empty PIN as a wrong one.
    cli.fail("export", "--name", "pinned", expect=["--auth", "PIN"])
    cli.fail("export", "--name", "pinned", "--auth", "0000", expect=["authorization"])
    assert not cli.keys()["pinned"]["pin_blocked"]
    cli.fail("export", "--name", "pinned", "--auth", "0001", expect=["locked"])
    assert cli.keys()["pinned"]["pin_blocked"]
    cli.fail("export", "--name", "pinned", "--auth", "1234", expect=["locked"])
    cli.fail("pin", "unlock", "--name", "pinned", "--puk", "11111111", expect=["PUK"])
    cli.run("pin", "unlock", "--name", "pinned", "--puk", "87654321")
    assert not cli.keys()["pinned"]["pin_blocked"]
    cli.run("pin", "change", "--name", "pinned", "--old", "1234", "--new", "abcd")
    cli.fail("export", "--name", "pinned", "--auth", "1234", expect=["authorization"])
    cli.run("export", "--name", "pinned", "--auth", "abcd")
    cli.run("pin", "set", "--name", "pinned", "--puk", "87654321", "--new", "wxyz")
    pem = cli.run("export", "--name", "pinned", "--auth", "wxyz").stdout.encode()
    assert cli.public_der_of_key(pem) == cli.public_der_of_cert(cli.cert("pinned")[0])
    cli.fail("pin", "change", "--name", "pinned", "--old", "wxyz", expect=["--new"])


def test_delete_by_name_and_handle(cli):
    cli.run("generate", "--name", "one", "--algorithm", "P-256")
    cli.run("generate", "--name", "two", "--algorithm", "Ed25519")
    cli.run("delete", "--name", "one")
    keys = cli.keys()
    assert set(keys) == {"two"}
    cli.run("delete", "--handle", keys["two"]["handle"])
    assert cli.keys() == {}
    assert json.loads(cli.run("list", "--json").stdout) == []
    cli.fail("delete", "--name", "one", expect=["no key named 'one'"])
    cli.fail("delete", "--handle", "424242", expect=["424242"])


def test_delete_protection_needs_the_pin(cli):
    cli.run("generate", "--name", "guarded", "--algorithm", "P-256", "--pin", "2468", "--delete-protection", "pin")
    cli.fail("delete", "--name", "guarded", expect=["--auth"])
    cli.fail("delete", "--name", "guarded", "--auth", "1357", expect=["authorization"])
    cli.run("delete", "--name", "guarded", "--auth", "2468")
    assert "guarded" not in cli.keys()


# ---------------------------------------------------------------------------------- errors


def test_errors_name_the_problem(cli):
    key_path, crt_path = cli.self_signed("k", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"), "/CN=k")
    other_key, other_crt = cli.self_signed("o", ("rsa:2048",), "/CN=o")
    cli.run("generate", "--name", "taken", "--algorithm", "P-256")

    cli.fail("generate", "--name", "taken", "--algorithm", "P-256", expect=["'taken' already exists"])
    cli.fail("import", "--name", "taken", "--key", key_path, "--cert", crt_path, expect=["'taken' already exists"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-257", expect=["unknown algorithm 'P-257'"])
    cli.fail("generate", "--name", "x", expect=["--algorithm"])
    cli.fail("generate", "--algorithm", "P-256", expect=["--name"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-256", "--pin", "12", expect=["--pin"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-256", "--puk", "1234", expect=["--puk needs --pin"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-256", "--app-usage", "everything",
             expect=["--app-usage", "everything"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-256", "--subject", "XX=y", expect=["'XX'"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-256", "--frobnicate", expect=["--frobnicate"])
    cli.fail("generate", "--name", "x", "--algorithm", "P-256", "--endorse", "urn:nothing",
             expect=["urn:nothing"])
    cli.fail("import", "--name", "x", "--key", crt_path, "--cert", crt_path, expect=["k.crt", "private key"])
    cli.fail("import", "--name", "x", "--key", key_path, "--cert", key_path, expect=["k.key", "certificate"])
    cli.fail("import", "--name", "x", "--key", "missing.pem", "--cert", crt_path, expect=["missing.pem"])
    cli.fail("import", "--name", "x", "--key", other_key, "--cert", crt_path, expect=["does not match"])
    cli.fail("import", "--name", "x", "--pkcs12", crt_path, expect=["PKCS#12"])
    cli.fail("import", "--name", "x", "--key", key_path, expect=["--cert"])
    cli.fail("export", "--name", "nobody", expect=["no key named 'nobody'"])
    cli.fail("export", "--name", "a", "--handle", "1", expect=["--name or --handle"])
    cli.fail("pin", "reset", "--name", "taken", expect=["'reset'"])
    # A failed provisioning leaves nothing behind.
    assert set(cli.keys()) == {"taken"}

    cli.run("import", "--name", "first", "--key", key_path, "--cert", crt_path)
    cli.fail("import", "--name", "second", "--key", key_path, "--cert", crt_path, expect=["'first'"])


def test_help_for_every_command(cli):
    for cmd in (["list"], ["generate"], ["import"], ["export"], ["cert"], ["delete"], ["pin"]):
        res = cli.run(*cmd, "--help")
        assert res.stdout.startswith("usage: sks " + cmd[0]), res.stdout


# ---------------------------------------------------------------------------------- secrets
# PINs, PUKs and passwords from files, standard input or a terminal prompt, never in argv.


def write_secret(cli, name, value):
    path = cli.dir / name
    path.write_text(value + "\n")
    return path


def test_secrets_from_files(cli):
    pin, puk = write_secret(cli, "pin.txt", "1234"), write_secret(cli, "puk.txt", "87654321")
    cli.run("generate", "--name", "pinned", "--algorithm", "P-256", "--pin-file", pin, "--puk-file", puk,
            "--exportable")
    # The newline is not part of the PIN: the plain form with "1234" opens the key.
    cli.run("export", "--name", "pinned", "--auth", "1234")
    cli.fail("export", "--name", "pinned", "--auth-file", write_secret(cli, "bad.txt", "9999"),
             expect=["authorization"])
    cli.run("pin", "change", "--name", "pinned", "--old-file", pin, "--new-file", write_secret(cli, "new", "abcd"))
    cli.run("pin", "set", "--name", "pinned", "--puk-file", puk, "--new-file", write_secret(cli, "n2", "wxyz"))
    pem = cli.run("export", "--name", "pinned", "--auth-file", write_secret(cli, "auth", "wxyz")).stdout.encode()
    assert cli.public_der_of_key(pem) == cli.public_der_of_cert(cli.cert("pinned")[0])
    # The same option twice, in either form, and a missing or empty file are refused.
    cli.fail("export", "--name", "pinned", "--auth", "wxyz", "--auth-file", pin, expect=["--auth given twice"])
    cli.fail("export", "--name", "pinned", "--auth-file", cli.dir / "none", expect=["--auth-file", "none"])
    (cli.dir / "empty").write_text("\n")
    cli.fail("export", "--name", "pinned", "--auth-file", cli.dir / "empty", expect=["--auth-file", "no auth"])


def test_secrets_from_stdin_in_command_line_order(cli):
    cli.run("generate", "--name", "pinned", "--algorithm", "P-256", "--pin-file", "-", "--exportable",
            input="1234\n")
    cli.run("pin", "change", "--name", "pinned", "--old-file", "-", "--new-file", "-", input="1234\nabcd\n")
    cli.fail("export", "--name", "pinned", "--auth-file", "-", expect=["authorization"], input="1234\n")
    pem = cli.run("export", "--name", "pinned", "--auth-file", "-", input="abcd\r\n").stdout.encode()
    assert b"PRIVATE KEY" in pem


def test_encrypted_pkcs12_password_from_file(cli):
    key, crt = cli.self_signed("p", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"), "/CN=p")
    p12 = cli.dir / "p.p12"
    cli.openssl("pkcs12", "-export", "-inkey", key, "-in", crt, "-out", p12, "-passout", "pass:s3cret")
    cli.fail("import", "--name", "p", "--pkcs12", p12, expect=["password"])
    cli.run("import", "--name", "p", "--pkcs12", p12, "--passin-file", write_secret(cli, "pass", "s3cret"))
    assert "p" in cli.keys()


def _read_until(fd, transcript, pos, text, timeout=20):
    """Reads the terminal until `text` appears after pos; returns (transcript, end of the match)."""
    deadline = time.time() + timeout
    while text.encode() not in transcript[pos:]:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        if not ready:
            raise AssertionError(f"no prompt {text!r} on the terminal; it showed {transcript!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"the program ended before asking {text!r}: {transcript!r}")
        transcript += chunk
    return transcript, transcript.index(text.encode(), pos) + len(text)


def _wait_echo_off(fd, timeout=10):
    """OpenSSL prints the prompt, then turns echo off and reads: wait for the second step."""
    deadline = time.time() + timeout
    while termios.tcgetattr(fd)[3] & termios.ECHO:
        assert time.time() < deadline, "the prompt did not turn the terminal's echo off"
        time.sleep(0.01)


def on_terminal(cli, args, answers):
    """Runs `sks ARGS` with a pseudo-terminal as its controlling terminal and answers each
    prompt (a piece of its text) with a line typed on it. Returns (exit code, everything the
    terminal showed, the program's argv as ps saw it at each prompt)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(cli.dir)
            os.execv(cli.binary, [cli.binary, "--store", str(cli.store), *map(str, args)])
        finally:
            os._exit(127)
    transcript, pos, argv_seen = b"", 0, []
    try:
        for prompt, answer in answers:
            transcript, pos = _read_until(fd, transcript, pos, prompt)
            _wait_echo_off(fd)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv_seen.append(f.read())
            os.write(fd, answer.encode() + b"\n")
        while True:
            ready, _, _ = select.select([fd], [], [], 20)
            try:
                chunk = os.read(fd, 4096) if ready else b""
            except OSError:
                chunk = b""
            if not chunk:
                break
            transcript += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript.decode(errors="replace"), argv_seen


def test_prompts_on_a_terminal_without_echo(cli):
    cli.run("generate", "--name", "pinned", "--algorithm", "P-256", "--pin-file", write_secret(cli, "pin", "1234"),
            "--puk-file", write_secret(cli, "puk", "87654321"), "--exportable")
    rc, shown, argv = on_terminal(cli, ["pin", "change", "--name", "pinned"],
                                  [("current PIN:", "1234"), ("new PIN:", "6543"), ("Verifying", "6543")])
    assert rc == 0, shown
    assert "done for key" in shown and "1234" not in shown and "6543" not in shown, shown
    assert all(b"1234" not in a and b"6543" not in a for a in argv)
    rc, shown, _ = on_terminal(cli, ["export", "--name", "pinned", "--out", "key.pem"], [("PIN of the key:", "6543")])
    assert rc == 0 and "6543" not in shown, shown
    assert b"PRIVATE KEY" in (cli.dir / "key.pem").read_bytes()
    # A new PIN typed differently the second time is refused; nothing changes.
    rc, shown, _ = on_terminal(cli, ["pin", "set", "--name", "pinned"],
                               [("PUK:", "87654321"), ("new PIN:", "1111"), ("Verifying", "2222")])
    assert rc != 0, shown
    cli.run("export", "--name", "pinned", "--auth", "6543")
    # `generate --pin-file -` on a terminal asks for the new PIN twice.
    rc, shown, _ = on_terminal(cli, ["generate", "--name", "typed", "--algorithm", "P-256", "--pin-file", "-",
                                     "--exportable"], [("pin:", "2580"), ("Verifying", "2580")])
    assert rc == 0 and "2580" not in shown, shown
    cli.run("export", "--name", "typed", "--auth", "2580")


def test_readme_form_keeps_the_pin_out_of_argv(cli):
    """README's form (`--pin-file -`, the PIN on standard input): while the command runs, its
    argv as ps shows it (/proc/PID/cmdline) has no PIN; the legacy `--pin PIN` would show it."""
    pin = "741852"
    proc = subprocess.Popen([cli.binary, "--store", str(cli.store), "generate", "--name", "web", "--algorithm",
                             "P-256", "--pin-file", "-", "--exportable"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cli.dir)
    try:
        deadline = time.time() + 10
        argv = [b""]
        while argv == [b""] and time.time() < deadline:  # exec may still be setting up argv
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        assert b"--pin-file" in argv and pin.encode() not in b" ".join(argv), argv
        out, err = proc.communicate(pin.encode() + b"\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert cli.keys()["web"]["pin_protected"]
    cli.run("export", "--name", "web", "--auth-file", write_secret(cli, "pin", pin))
    readme = (os.path.dirname(os.path.abspath(__file__)) + "/../../README.md")
    with open(readme) as f:
        text = f.read()
    assert "--pin-file" in text and "--pin PIN" not in text


def test_ca_pass_phrase_from_file_for_generate_and_skip_issue(cli):
    ca_key, ca_crt = cli.self_signed("ca", ("ec", "-pkeyopt", "ec_paramgen_curve:P-256"), "/CN=sks test CA")
    enc = cli.dir / "ca.enc.key"
    cli.openssl("pkey", "-in", ca_key, "-aes256", "-passout", "pass:ca-secret", "-out", enc)
    passfile = write_secret(cli, "ca.pass", "ca-secret")
    cli.fail("generate", "--name", "g", "--algorithm", "P-256", "--ca-key", enc, "--ca-cert", ca_crt,
             expect=["ca.enc.key"])
    cli.run("generate", "--name", "g", "--algorithm", "P-256", "--ca-key", enc, "--ca-cert", ca_crt,
            "--ca-pass-file", passfile)
    assert cli.cert("g")[0].issuer.rfc4514_string() == "CN=sks test CA"
    cli.run("skip", "request", "--curve", "P-256", "--subject", "CN=device", "--trust", ca_crt,
            "--out", "req.pem")
    cli.run("skip", "issue", "--request", "req.pem", "--ca-key", enc, "--ca-cert", ca_crt, "--key-type", "P-256",
            "--ca-pass-file", "-", "--out", "pkg.der", input="ca-secret\n")
    assert (cli.dir / "pkg.der").stat().st_size > 0
