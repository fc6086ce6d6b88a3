"""SKIP over the network (docs/skip-issuer.md): `sks skip enroll` against sks-issuer behind
Debian's nginx, with the issuing CA's key in sksd (an `sks:` URI through the provider), real
device stores, and the openssl CLI as the independent peer for signatures and archived keys.

    /usr/bin/python3 -m pytest -q test/python/test_skip_issuer.py
"""

import base64
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from asn1crypto import keys as asn1keys
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import issuertools as it
import skipissuer as si
import skiptools as st

PROFILE = """
[profile device]
subject = O=sks tests, OU=devices
key = P-256 sign
key = P-384 tls
key = Ed25519 id
key = P-256 encrypt archive
key = brainpoolP256r1 escrow archive
recovery-cert = {rsa}
recovery-cert = {ec}
"""
KEYS_PER_PACKAGE = 5
ARCHIVED_PER_PACKAGE = 2
DEVICES = 16


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    s = it.Service(tmp_path_factory.mktemp("issuer"), PROFILE, children=4)
    yield s
    s.stop()


def device(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    return st.SkipStore(d)


def enroll(service, store, token, check=True, **kw):
    return st.run(it.enroll_args(service, store, token, **kw), check=check, cwd=store.dir)


def out(res):
    return res.stdout.decode(errors="replace") + res.stderr.decode(errors="replace")


def device_keys(store):
    """{friendly name: (handle, end-entity certificate DER)} of the usable keys."""
    return {name: (h, path[0]) for h, (name, path) in store.key_paths().items() if path}


def pem_file(directory, name, der, label="CERTIFICATE"):
    b64 = base64.encodebytes(der).decode()
    p = directory / name
    p.write_text(f"-----BEGIN {label}-----\n{b64}-----END {label}-----\n")
    return p


def public_pem_of_cert(directory, cert_der):
    cert = pem_file(directory, "cert-for-pub.pem", cert_der)
    return st.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"]).stdout


def public_pem_of_pkcs8(path, form="DER"):
    return st.run(["openssl", "pkey", "-inform", form, "-in", path, "-pubout"]).stdout


def private_scalar(pkcs8_der):
    info = asn1keys.PrivateKeyInfo.load(pkcs8_der)
    ec_key = info["private_key"].parsed
    return ec_key["private_key"].contents


def state_of(service, store):
    return service.enrolments(), len(service.archived()), store.snapshot()


# ------------------------------------------------------------------------------------------ success

def test_sixteen_devices_enrol_in_parallel(service, tmp_path):
    stores = [device(tmp_path, f"dev{i:02d}") for i in range(DEVICES)]
    tokens = [service.add_token(f"dev{i:02d}") for i in range(DEVICES)]
    procs = [subprocess.Popen([str(a) for a in it.enroll_args(service, s, t)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=st.plain_env(), cwd=s.dir)
             for s, t in zip(stores, tokens)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for rc, o, e in results:
        assert rc == 0, (o + e).decode(errors="replace")
        assert f"imported {KEYS_PER_PACKAGE} keys" in o.decode() and "enrolment confirmed" in o.decode(), o + e

    archived = {row[0]: row for row in service.archived()}
    assert len(archived) >= DEVICES * ARCHIVED_PER_PACKAGE
    log = service.log_text()
    recovered = []
    for i, store in enumerate(stores):
        name = f"dev{i:02d}"
        keys = device_keys(store)
        # Every key of the profile, its certificate's subject from the profile, plus the
        # factory key (certified with the device's name).
        assert sorted(keys) == sorted([name] + [f"{name} {label}" for label in
                                                ("sign", "tls", "id", "encrypt", "escrow")]), keys
        for key_name, (handle, cert_der) in keys.items():
            cert = x509.load_der_x509_certificate(cert_der)
            assert "O=sks tests" in cert.subject.rfc4514_string()
            if key_name == name:
                continue
            kind = "ed25519" if key_name.endswith(" id") else "ec"
            store.sign_and_verify(handle, cert_der, kind)
            serial = format(cert.serial_number, "X")
            serial = ("0" + serial) if len(serial) % 2 else serial
            if key_name.endswith((" encrypt", " escrow")):
                assert serial in archived, f"{key_name}: certificate {serial} is not archived"
                assert archived[serial][1] == name
                # The independent peer: openssl cms -decrypt with the RSA recovery key (OAEP).
                env_file = store.write(f"envelope-{serial}.der", archived[serial][4])
                p8 = store.dir / f"recovered-{serial}.der"
                st.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", env_file, "-inkey",
                        service.rsa_recovery_key, "-recip", service.rsa_recovery, "-out", p8])
                assert public_pem_of_pkcs8(p8) == public_pem_of_cert(store.dir, cert_der), key_name
                recovered.append(p8.read_bytes())
            else:
                assert serial not in archived
        assert f'device="{name}"' in log
    # The issuer logged each issuance with the keys and which were archived.
    assert log.count(":archived") >= DEVICES * ARCHIVED_PER_PACKAGE
    assert sum(1 for line in log.splitlines() if " issued who=" in line) >= DEVICES
    # No private key in clear anywhere the service writes.
    assert len(recovered) == DEVICES * ARCHIVED_PER_PACKAGE
    scan = {p: p.read_bytes() for p in service.files_to_scan()}
    for p8 in recovered:
        scalar = private_scalar(p8)
        needles = [scalar, scalar.hex().encode(), scalar.hex().upper().encode(), p8, base64.b64encode(p8)[:40]]
        for path, data in scan.items():
            for n in needles:
                assert n not in data, f"a private key is in clear in {path}"
    # Confirmed packages are forgotten.
    for row in service.enrolments():
        if row[2].startswith("dev"):
            assert row[4] is None and row[6], row[:4]


def test_recover_with_the_ec_recovery_key(service, tmp_path):
    """`sks skip recover` (EC recovery key: CMS key agreement) gives the archived key back,
    and `openssl cms -decrypt` with the same key agrees."""
    store = device(tmp_path, "recover-dev")
    token_file = tmp_path / "token.txt"
    token_file.write_text(service.add_token("recover-dev") + "\n")
    args = [a if a != "--token" else "--token-file" for a in it.enroll_args(service, store, "TOKEN")]
    args[args.index("TOKEN")] = token_file
    res = st.run(args, cwd=store.dir)
    assert "enrolment confirmed" in out(res)
    name, (handle, cert_der) = next((n, v) for n, v in device_keys(store).items() if n.endswith(" encrypt"))
    cert = x509.load_der_x509_certificate(cert_der)
    serial = format(cert.serial_number, "x")
    recovered = tmp_path / "recovered.pem"
    res = st.run([st.SKS, "--store", store.db, "skip", "recover", "--archive", service.archive, "--recovery-key",
                  service.ec_recovery_key, "--serial", serial, "--out", recovered])
    assert recovered.stat().st_mode & 0o077 == 0
    assert public_pem_of_pkcs8(recovered, "PEM") == public_pem_of_cert(tmp_path, cert_der)
    row = next(r for r in service.archived() if r[3] == cert_der)
    env_file = tmp_path / "env.der"
    env_file.write_bytes(row[4])
    peer = st.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", env_file, "-inkey",
                   service.ec_recovery_key, "-recip", service.ec_recovery]).stdout
    mine = serialization.load_pem_private_key(recovered.read_bytes(), None)
    assert mine.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()) == peer
    # The RSA recovery key (OAEP) may itself stay in a device: an sks: URI through the provider.
    store.sks("import", "--name", "recovery-officer", "--key", service.rsa_recovery_key, "--cert",
              service.rsa_recovery)
    env = st.plain_env()
    env["OPENSSL_MODULES"] = str(st.BUILD)
    from_device = tmp_path / "from-device.pem"
    st.run([st.SKS, "--store", store.db, "skip", "recover", "--archive", service.archive, "--recovery-key",
            "sks:name=recovery-officer", "--serial", serial, "--out", from_device], env=env)
    assert from_device.read_bytes() == recovered.read_bytes()
    # A key that is not a recovery key opens nothing.
    other_key, _ = it.self_signed(tmp_path, "not-recovery", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "x")
    res = st.run([st.SKS, "--store", store.db, "skip", "recover", "--archive", service.archive, "--recovery-key",
                  other_key, "--serial", serial], check=False)
    assert res.returncode == 1 and b"cannot open the archived key" in res.stderr, out(res)
    assert b"PRIVATE KEY" not in res.stdout


# ------------------------------------------------------------------------------------------ refusals

def test_reused_token_is_refused(service, tmp_path):
    first, second = device(tmp_path, "first"), device(tmp_path, "second")
    token = service.add_token("first")
    assert "enrolment confirmed" in out(enroll(service, first, token))
    before = service.enrolments(), len(service.archived())
    res = enroll(service, second, token, check=False)
    assert res.returncode == 1 and "HTTP 403" in out(res) and "token already used" in out(res), out(res)
    assert (service.enrolments(), len(service.archived())) == before
    # The refused request is withdrawn: no factory key left waiting in the device.
    assert device_keys(second) == {} and second.open_skip_sessions() == []
    # Also the very same device and request again after the confirmation.
    res = enroll(service, first, token, check=False)
    assert res.returncode == 1 and "HTTP 403" in out(res) and "token already used" in out(res), out(res)
    assert (service.enrolments(), len(service.archived())) == before


def test_token_of_a_pending_enrolment_is_refused_to_another_key(service, tmp_path):
    """The token's package is issued but not yet confirmed (the answer was lost): another
    factory key with the same token gets nothing, not even the kept package."""
    proxy = it.WireProxy(service, "cut")
    try:
        owner, thief = device(tmp_path, "owner"), device(tmp_path, "thief")
        token = service.add_token("owner")
        res = enroll(service, owner, token, check=False, url=proxy.url)
        assert res.returncode == 1 and proxy.spoiled == 1, out(res)
    finally:
        proxy.close()
    before = service.enrolments(), len(service.archived())
    res = enroll(service, thief, token, check=False)
    assert res.returncode == 1 and "HTTP 403" in out(res) and "another factory key" in out(res), out(res)
    assert (service.enrolments(), len(service.archived())) == before
    assert device_keys(thief) == {}
    assert "enrolment confirmed" in out(enroll(service, owner, token))


def test_one_token_raced_by_many_keys(service, tmp_path):
    """Eight requests with one token and eight different factory keys at once, spread over
    the issuer's four processes: one key gets a package, the seven others 403; one package's
    keys archived, the token bound to the winner."""
    token = service.add_token("raced")
    bodies = []
    for i in range(8):
        body = tmp_path / f"race{i}.b64"
        body.write_bytes(base64.encodebytes(si.make_request(si.new_key("secp256r1"), "raced")))
        bodies.append(body)
    archived_before = len(service.archived())
    procs = [subprocess.Popen(["curl", "-sS", "--cacert", service.server_cert, "-H", f"Authorization: Bearer {token}",
                               "--data-binary", f"@{b}", "-o", "/dev/null", "-w", "%{http_code}",
                               f"{service.url}/.well-known/est/skip/simpleenroll"], stdout=subprocess.PIPE)
             for b in bodies]
    codes = sorted(p.communicate(timeout=300)[0].decode() for p in procs)
    assert codes == ["200"] + ["403"] * 7, codes
    assert len(service.archived()) == archived_before + ARCHIVED_PER_PACKAGE
    rows = [r for r in service.enrolments() if r[2] == "raced"]
    assert len(rows) == 1 and rows[0][3] and rows[0][4], rows
    assert service.log_text().count("another factory key") >= 7


def test_request_not_signed_by_its_key(service, tmp_path):
    """A PKCS#10 whose signature does not verify with its own key: 400, and the token stays
    unused (the genuine device then enrols with it)."""
    token = service.add_token("unsigned")
    factory = si.new_key("secp256r1")
    der = bytearray(si.make_request(factory, "unsigned"))
    der[-5] ^= 0x01  # inside the signature
    body = tmp_path / "bad.b64"
    body.write_bytes(base64.encodebytes(bytes(der)))
    before = service.enrolments(), len(service.archived())
    res = st.run(["curl", "-sS", "--cacert", service.server_cert, "-H", f"Authorization: Bearer {token}", "-H",
                  "Content-Type: application/pkcs10", "--data-binary", f"@{body}", "-w", "\n%{http_code}",
                  f"{service.url}/.well-known/est/skip/simpleenroll"])
    text = res.stdout.decode()
    assert text.endswith("\n400") and "does not verify" in text, text
    assert (service.enrolments(), len(service.archived())) == before
    store = device(tmp_path, "unsigned")
    assert "enrolment confirmed" in out(enroll(service, store, token))


def test_wrong_trust_anchor_on_the_device(service, tmp_path):
    """The device trusts another root: the package is refused before the store changes; the
    request stays pending, nothing is confirmed."""
    other_root = si.Ca("another root")
    other = tmp_path / "other-root.pem"
    other.write_bytes(other_root.pem)
    store = device(tmp_path, "anchored")
    token = service.add_token("anchored")
    res = enroll(service, store, token, check=False, trust=other)
    assert res.returncode == 1 and "refused" in out(res), out(res)
    assert device_keys(store) == {} and len(store.open_skip_sessions()) == 1
    snap = store.snapshot()
    res = enroll(service, store, token, check=False, trust=other)
    assert res.returncode == 1 and store.snapshot() == snap
    row = next(r for r in service.enrolments() if r[2] == "anchored")
    assert row[6] is None  # never confirmed


def test_tampered_package_on_the_wire(service, tmp_path):
    """A proxy flips one base64 character of the package: refused, the device unchanged;
    directly, the same package then imports."""
    proxy = it.WireProxy(service, "flip")
    try:
        store = device(tmp_path, "tampered")
        token = service.add_token("tampered")
        url = proxy.url
        res = enroll(service, store, token, check=False, url=url)
        assert res.returncode == 1 and "refused" in out(res), out(res)
        snap = store.snapshot()
        res = enroll(service, store, token, check=False, url=url)
        assert res.returncode == 1 and store.snapshot() == snap and proxy.spoiled == 2
        assert device_keys(store) == {}
        issued = service.log_text().count('device="tampered" profile=device')
        res = enroll(service, store, token)
        assert f"imported {KEYS_PER_PACKAGE} keys" in out(res)
        log = service.log_text()
        assert log.count('device="tampered" profile=device') == issued + 1
        assert sum(1 for line in log.splitlines() if line.split(" ")[1] == "issued"
                   and 'device="tampered"' in line) == 1
    finally:
        proxy.close()


def test_answer_cut_off_then_enrol_again(service, tmp_path):
    """The answer is cut mid-transfer: nothing imported; enrolling again fetches the same
    package (issued once) and imports it once."""
    proxy = it.WireProxy(service, "cut")
    try:
        store = device(tmp_path, "cut")
        token = service.add_token("cut")
        res = enroll(service, store, token, check=False, url=proxy.url)
        assert res.returncode == 1 and proxy.spoiled == 1, out(res)
        assert device_keys(store) == {}
        res = enroll(service, store, token)
        assert f"imported {KEYS_PER_PACKAGE} keys" in out(res)
        lines = [line for line in service.log_text().splitlines() if 'device="cut"' in line]
        assert [line.split(" ")[1] for line in lines if " who=" in line and "keys=" in line] == ["issued", "again"]
        assert len(device_keys(store)) == KEYS_PER_PACKAGE + 1
        # Once more: nothing left to do, nothing imported twice.
        res = enroll(service, store, token, check=False)
        assert len(device_keys(store)) == KEYS_PER_PACKAGE + 1
    finally:
        proxy.close()


def test_archival_failure_releases_no_package(service, tmp_path):
    """The archive refuses a write: HTTP 500, no package, the token still unbound; once the
    archive works the device enrols with the same request."""
    con = sqlite3.connect(service.archive)
    con.execute("CREATE TRIGGER archive_full BEFORE INSERT ON archived_keys BEGIN"
                " SELECT RAISE(ABORT, 'the archive refuses this key'); END")
    con.commit()
    con.close()
    store = device(tmp_path, "noarchive")
    token = service.add_token("noarchive")
    try:
        before = service.enrolments(), len(service.archived())
        res = enroll(service, store, token, check=False)
        assert res.returncode == 1 and "HTTP 500" in out(res) and "not released" in out(res), out(res)
        assert (service.enrolments(), len(service.archived())) == before
        assert device_keys(store) == {} and len(store.open_skip_sessions()) == 1
        assert "archive-failed" in service.log_text()
    finally:
        con = sqlite3.connect(service.archive)
        con.execute("DROP TRIGGER archive_full")
        con.commit()
        con.close()
    res = enroll(service, store, token)
    assert f"imported {KEYS_PER_PACKAGE} keys" in out(res)


def test_unknown_token_and_garbage_body(service, tmp_path):
    res = st.run(["curl", "-sS", "--cacert", service.server_cert, "-H", "Authorization: Bearer " + "0" * 64,
                  "--data-binary", "not base64 at all", "-w", "\n%{http_code}",
                  f"{service.url}/.well-known/est/skip/simpleenroll"])
    assert res.stdout.decode().endswith("\n400"), res.stdout
    store = device(tmp_path, "nobody")
    res = enroll(service, store, "0" * 64, check=False)
    assert res.returncode == 1 and "HTTP 403" in out(res) and "unknown enrolment token" in out(res), out(res)


def test_enrolment_by_tls_client_certificate(tmp_path):
    """auth = cert: nginx verifies the client certificate and passes it; the enrolment is that
    certificate (device name its CN), bound to the first factory key like a token."""
    service = it.Service(tmp_path / "svc", PROFILE, auth="cert", extra="cert-profile = device")
    try:
        key, csr, cert = tmp_path / "client.key", tmp_path / "client.csr", tmp_path / "client.pem"
        it.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                   "-out", csr, "-subj", "/CN=certdev")
        it.openssl("x509", "-req", "-in", csr, "-CA", service.client_ca, "-CAkey", service.client_ca_key,
                   "-CAcreateserial", "-days", "1", "-out", cert)

        def args(store, with_cert=True):
            base = [st.SKS, "--store", store.db, "skip", "enroll", service.url, "--trust", service.trust,
                    "--tls-ca", service.server_cert]
            return base + (["--cert", cert, "--key", key] if with_cert else ["--token", "0" * 64])

        store = device(tmp_path, "certdev")
        res = st.run(args(store), cwd=store.dir)
        assert f"imported {KEYS_PER_PACKAGE} keys" in out(res) and "enrolment confirmed" in out(res)
        assert sorted(device_keys(store)) == sorted(["certdev"] + [f"certdev {label}" for label in
                                                                   ("sign", "tls", "id", "encrypt", "escrow")])
        other = device(tmp_path, "other")
        res = st.run(args(other), check=False, cwd=other.dir)
        assert res.returncode == 1 and "HTTP 403" in out(res), out(res)
        # Without a certificate (a token is no credential here): 401.
        res = st.run(args(other, with_cert=False), check=False, cwd=other.dir)
        assert res.returncode == 1 and "HTTP 401" in out(res), out(res)
        assert device_keys(other) == {}
    finally:
        service.stop()


def test_rate_limit_per_token_and_source(tmp_path):
    """rate-limit = 3: the fourth request of a minute gets 429, whatever it carries; a logged
    refusal each time, nothing issued."""
    service = it.Service(tmp_path / "svc", PROFILE, rate_limit=3)
    try:
        token = service.add_token("limited")
        body = tmp_path / "req.b64"
        body.write_bytes(base64.encodebytes(si.make_request(si.new_key("secp256r1"), "limited")))
        codes = []
        for _ in range(5):
            res = st.run(["curl", "-sS", "--cacert", service.server_cert, "-H", f"Authorization: Bearer {token}",
                          "--data-binary", "garbage", "-o", "/dev/null", "-w", "%{http_code}",
                          f"{service.url}/.well-known/est/skip/simpleenroll"])
            codes.append(res.stdout.decode())
        assert codes == ["400", "400", "400", "429", "429"], codes
        res = st.run(["curl", "-sS", "--cacert", service.server_cert, "-H", f"Authorization: Bearer {token}",
                      "--data-binary", f"@{body}", "-o", "/dev/null", "-w", "%{http_code}",
                      f"{service.url}/.well-known/est/skip/simpleenroll"])
        assert res.stdout.decode() == "429"
        assert service.log_text().count("rate limit") == 3
        assert all(row[3] is None for row in service.enrolments())
    finally:
        service.stop()


def test_client_key_in_the_device_through_the_engine(tmp_path):
    """`--cert C --key sks:name=...`: the TLS client key stays in the device; curl inside
    `sks skip enroll` signs with it through the sks ENGINE."""
    import types
    import provtools as pt
    service = it.Service(tmp_path / "svc", PROFILE, auth="cert", extra="cert-profile = device")
    try:
        store = device(tmp_path, "engdev")
        store.sks("generate", "--name", "tlsclient", "--algorithm", "P-256", "--subject", "CN=engdev")
        own_cert = device_keys(store)["tlsclient"][1]
        pub = tmp_path / "tlsclient.pub"
        pub.write_bytes(public_pem_of_cert(tmp_path, own_cert))
        cert = tmp_path / "tlsclient.pem"
        it.openssl("x509", "-new", "-subj", "/CN=engdev", "-force_pubkey", pub, "-CA", service.client_ca, "-CAkey",
                   service.client_ca_key, "-days", "1", "-out", cert)
        env = st.plain_env()
        env["OPENSSL_CONF"] = str(pt.write_openssl_conf(tmp_path / "openssl.cnf", types.SimpleNamespace(path=store.db),
                                                        provider=True, engine=True))
        res = st.run([st.SKS, "--store", store.db, "skip", "enroll", service.url, "--trust", service.trust,
                      "--tls-ca", service.server_cert, "--cert", cert, "--key", "sks:name=tlsclient"], env=env,
                     cwd=store.dir)
        assert f"imported {KEYS_PER_PACKAGE} keys" in out(res) and "enrolment confirmed" in out(res)
        assert "engdev encrypt" in device_keys(store)
        assert "who=cert:" in service.log_text()
    finally:
        service.stop()


# ------------------------------------------------------------------------------------------ the client's transport

def test_plain_http_url_is_refused_before_the_token_leaves(service, tmp_path):
    """http://: the bearer token would cross the network readable; whoever reads it can enrol
    its own factory key as this device first. The client refuses the URL before it sends
    anything or makes a factory key."""
    listener = it.Impostor()
    try:
        store = device(tmp_path, "plain")
        token = service.add_token("plain")
        res = enroll(service, store, token, check=False, url=f"http://127.0.0.1:{listener.port}")
        assert res.returncode == 2 and "must be https://" in out(res), out(res)
        assert token.encode() not in listener.received and listener.received == b""
        assert device_keys(store) == {} and store.open_skip_sessions() == []
    finally:
        listener.close()
    # The token is unused: the device enrols with it over https.
    assert "enrolment confirmed" in out(enroll(service, store, token))


def test_tls_ca_alone_verifies_the_server(service, tmp_path):
    """--tls-ca names the CA of the issuer: a server whose certificate chains only to a CA of
    the system's certificate directory (/etc/ssl/certs) is not the issuer and gets no token."""
    sysca_key, sysca = it.self_signed(tmp_path, "sysca", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                                      "a CA the system trusts", ["-addext", "basicConstraints=critical,CA:TRUE"])
    key, csr, cert = tmp_path / "impostor.key", tmp_path / "impostor.csr", tmp_path / "impostor.pem"
    it.openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
               "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = tmp_path / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    it.openssl("x509", "-req", "-in", csr, "-CA", sysca, "-CAkey", sysca_key, "-CAcreateserial", "-days", "1",
               "-extfile", ext, "-out", cert)
    sysca_key.unlink()  # nothing else is signed under it
    # The system's certificate directory, as the client sees it, with that CA linked in: a copy
    # bind-mounted over /etc/ssl/certs in a mount namespace of the client's own, so neither the
    # host nor any other process ever trusts the CA.
    certs = tmp_path / "certs"
    shutil.copytree("/etc/ssl/certs", certs, symlinks=True)
    subject_hash = it.openssl("x509", "-in", sysca, "-noout", "-subject_hash").stdout.decode().strip()
    (certs / f"{subject_hash}.{sum(1 for _ in certs.glob(subject_hash + '.*'))}").symlink_to(sysca)

    def trusting(args):
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/ssl/certs && exec "$@"', certs, *args]

    impostor = it.Impostor(tls=(cert, key))
    try:
        # The set-up is what it claims: curl with the system's CAs accepts the impostor.
        res = st.run(trusting(["curl", "-sS", "-o", "/dev/null", "-w", "%{ssl_verify_result}",
                               f"https://127.0.0.1:{impostor.port}/"]), check=False)
        assert impostor.received.startswith(b"GET / "), (impostor.received, out(res))
        impostor.received = b""
        store = device(tmp_path, "pinned")
        token = service.add_token("pinned")
        res = st.run(trusting(it.enroll_args(service, store, token, url=f"https://127.0.0.1:{impostor.port}")),
                     check=False, cwd=store.dir)
        assert res.returncode == 1, out(res)
        assert token.encode() not in impostor.received and b"Authorization" not in impostor.received, \
            impostor.received
    finally:
        impostor.close()
    # and the host's directory never had it
    assert not any(Path("/etc/ssl/certs").glob(subject_hash + ".*")) or \
        all(p.resolve() != sysca.resolve() for p in Path("/etc/ssl/certs").glob(subject_hash + ".*"))
    assert "enrolment confirmed" in out(enroll(service, store, token))


# ------------------------------------------------------------------------------------------ secrets in memory

def test_no_archived_key_stays_in_the_issuers_memory(service, tmp_path):
    """After the packages are out, no clear device key remains in any issuer process, not
    even in freed heap blocks (what a core dump or a later memory disclosure would show):
    every archived key (this test's and the earlier tests'), recovered from the archive, is
    searched for in the processes' writable memory."""
    for i in range(2):
        store = device(tmp_path, f"mem{i}")
        assert "enrolment confirmed" in out(enroll(service, store, service.add_token(f"mem{i}")))
    needles = []
    for serial, _, _, _, envelope in service.archived():
        env_file = tmp_path / f"envelope-{serial}.der"
        env_file.write_bytes(envelope)
        p8 = tmp_path / f"recovered-{serial}.der"
        st.run(["openssl", "cms", "-decrypt", "-binary", "-inform", "DER", "-in", env_file, "-inkey",
                service.rsa_recovery_key, "-recip", service.rsa_recovery, "-out", p8])
        der = p8.read_bytes()
        # The scalar, and the PKCS#8 past the 16 bytes malloc reuses in a freed block.
        needles.append((serial, private_scalar(der), der[16:]))
    assert len(needles) >= 2 * ARCHIVED_PER_PACKAGE
    pids = [int(p) for p in service.pidfile.read_text().split()]
    for pid in pids:
        memory = it.process_memory(pid)
        assert len(memory) > 100000
        for serial, scalar, tail in needles:
            assert scalar not in memory and tail not in memory, f"the key of certificate {serial} is in process {pid}"


# ------------------------------------------------------------------------------------------ device names

FORGED = '2026-01-01T00:00:00Z confirmed who=token:000000000000 source=10.0.0.1 device="victim"'


def test_device_name_that_would_forge_a_log_line(tmp_path):
    """A client certificate (from the trusted client CA) whose CN carries a quote and a line
    break would write a second, invented line into the issuer's log and a CN with a control
    character into certificates: refused (403) before anything is issued. add-token refuses
    such a --device too."""
    import datetime
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    service = it.Service(tmp_path / "svc", PROFILE, auth="cert", extra="cert-profile = device")
    try:
        ca_key = serialization.load_pem_private_key(service.client_ca_key.read_bytes(), None)
        ca = x509.load_pem_x509_certificate(service.client_ca.read_bytes())
        short = 'x"\n2026-01-01T00:00:00Z confirmed device="v'  # under 64 bytes: the characters decide
        for n, cn in enumerate(('dev"\n' + FORGED, short, "back\\slash")):
            key = ec.generate_private_key(ec.SECP256R1())
            now = datetime.datetime.now(datetime.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                    .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(now - datetime.timedelta(minutes=5))
                    .not_valid_after(now + datetime.timedelta(days=1))
                    .sign(ca_key, hashes.SHA256()))
            cert_file, key_file = tmp_path / f"forger{n}.pem", tmp_path / f"forger{n}.key"
            cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
            body = tmp_path / "req.b64"
            body.write_bytes(base64.encodebytes(si.make_request(si.new_key("secp256r1"), "forger")))
            res = st.run(["curl", "-sS", "--cacert", service.server_cert, "--cert", cert_file, "--key", key_file,
                          "--data-binary", f"@{body}", "-w", "\n%{http_code}",
                          f"{service.url}/.well-known/est/skip/simpleenroll"])
            text = res.stdout.decode(errors="replace")
            assert text.endswith("\n403") and "device name" in text, (cn, text[-300:])
            lines = service.log_text().splitlines()
            assert not any(line.startswith((FORGED[:30], "2026-01-01T00:00:00Z")) for line in lines), lines
            assert service.enrolments() == [] and service.archived() == []
        for bad in ('a"b', "two\nlines", "tab\there", "\x7f", "line\u2028sep", "evil\u202egnp.exe", "iso\u2066x"):
            res = st.run([it.ISSUER, "--config", service.config, "add-token", "--profile", "device", "--device", bad],
                         check=False)
            assert res.returncode != 0 and res.stdout == b"", (bad, res.stdout)
        assert service.enrolments() == []
        # A name in any script is fine.
        assert len(service.add_token("Gerät 7 – Halle Süd")) == 64
    finally:
        service.stop()


def test_service_files_are_the_services_alone(service):
    """The database (token hashes, kept packages), the archive (envelopes of device keys) and
    the log are readable by the service's user only, whoever made them first (the service or
    add-token)."""
    import stat
    for path in (service.db, service.archive, service.log):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} has mode {mode:o}"
