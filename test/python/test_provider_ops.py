"""Key exchange, decryption, certificates, CMS and STORE listing with keys in the store,
through the openssl command line and the sks provider. Whatever the sks provider produces is
checked by a plain OpenSSL (default provider only), and what it consumes is made by one.

    /usr/bin/python3 -m pytest test/python/test_provider_ops.py
"""

import re

import pytest

import provtools as pt

KEYS = [
    ("p256", "P-256"),
    ("p384", "P-384"),
    ("p521", "P-521"),
    ("bp256", "brainpoolP256r1"),
    ("bp512", "brainpoolP512r1"),
    ("rsa2048", "RSA-2048"),
    ("rsa3072", "RSA-3072"),
    ("ed25519", "Ed25519"),
    ("ca", "P-384", {"subject": "CN=sks test root in the store, O=sks tests"}),
    ("rsaca", "RSA-2048", {"subject": "CN=sks test RSA root in the store, O=sks tests"}),
]
EC = ["p256", "p384", "p521", "bp256", "bp512"]
RSA = ["rsa2048", "rsa3072"]
FIELD_BYTES = {"P-256": 32, "P-384": 48, "P-521": 66, "brainpoolP256r1": 32, "brainpoolP512r1": 64}
CONTENT = b"content for the key in the store\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = pt.make_store(tmp_path_factory, "ops", KEYS)
    (s.dir / "content").write_bytes(CONTENT)
    return s


def curve_of(store, name):
    return pt.EC_CURVES[store.keys[name].algorithm]


# ---------------------------------------------------------------------------------------------
# ECDH
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def peers(store):
    """One peer key per curve, generated and held by the default provider."""
    out = {}
    for name in EC:
        priv, pub = store.dir / f"peer.{name}.key", store.dir / f"peer.{name}.pub"
        pt.plain_openssl("genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve_of(store, name)}",
                         "-out", priv)
        pt.plain_openssl("pkey", "-in", priv, "-pubout", "-out", pub)
        out[name] = (priv, pub)
    return out


@pytest.mark.parametrize("name", EC)
def test_ecdh_same_secret_both_ways(store, peers, name):
    key = store.keys[name]
    priv, pub = peers[name]
    ours, theirs = store.dir / f"z.sks.{name}", store.dir / f"z.peer.{name}"
    store.openssl("pkeyutl", "-derive", "-inkey", key.uri(), "-peerkey", pub, "-out", ours)
    pt.plain_openssl("pkeyutl", "-derive", "-inkey", priv, "-peerkey", key.pub, "-out", theirs)
    z = ours.read_bytes()
    assert len(z) == FIELD_BYTES[key.algorithm]
    assert z == theirs.read_bytes()


def test_ecdh_with_x963_kdf(store, peers):
    """ECDH with the X9.63 KDF (what CMS key agreement uses) run by the provider after the
    device computed Z: the same bytes as the default provider's."""
    key = store.keys["p384"]
    priv, pub = peers["p384"]
    kdf = ["-pkeyopt", "kdf-type:X963KDF", "-pkeyopt", "kdf-digest:SHA384", "-pkeyopt", "kdf-outlen:48",
           "-pkeyopt", "hexkdf-ukm:00112233445566778899"]
    ours, theirs = store.dir / "kdf.sks", store.dir / "kdf.peer"
    store.openssl("pkeyutl", "-derive", "-inkey", key.uri(), "-peerkey", pub, "-out", ours, *kdf)
    pt.plain_openssl("pkeyutl", "-derive", "-inkey", priv, "-peerkey", key.pub, "-out", theirs, *kdf)
    assert len(ours.read_bytes()) == 48
    assert ours.read_bytes() == theirs.read_bytes()


# ---------------------------------------------------------------------------------------------
# RSA decryption
# ---------------------------------------------------------------------------------------------

PADDINGS = {
    "pkcs1": [],
    "oaep-sha1": ["-pkeyopt", "rsa_padding_mode:oaep"],
    "oaep-sha256": ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256"],
}


@pytest.mark.parametrize("padding", list(PADDINGS))
@pytest.mark.parametrize("name", RSA)
def test_rsa_decrypt(store, name, padding):
    key = store.keys[name]
    plain, ct, out = store.dir / f"pt.{name}.{padding}", store.dir / f"ct.{name}.{padding}", \
        store.dir / f"dec.{name}.{padding}"
    secret = f"a secret for {name} with {padding}".encode()
    plain.write_bytes(secret)
    pt.plain_openssl("pkeyutl", "-encrypt", "-certin", "-inkey", key.cert, "-in", plain, "-out", ct,
                     *PADDINGS[padding])
    store.openssl("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct, "-out", out, *PADDINGS[padding])
    assert out.read_bytes() == secret


def test_rsa_decrypt_unsupported_oaep_digest_is_refused_clearly(store):
    key = store.keys["rsa2048"]
    plain, ct = store.dir / "pt.oaep-sha3", store.dir / "ct.oaep-sha3"
    plain.write_bytes(b"x")
    opts = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha3-256"]
    pt.plain_openssl("pkeyutl", "-encrypt", "-certin", "-inkey", key.cert, "-in", plain, "-out", ct, *opts)
    err = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct, *opts)
    assert "OAEP with SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512" in err, err


# ---------------------------------------------------------------------------------------------
# Certificate requests and certificates
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,oid", [("p256", "prime256v1"), ("p384", "secp384r1"), ("bp256", "brainpoolP256r1")])
def test_csr_names_its_curve(store, name, oid):
    key = store.keys[name]
    csr = store.dir / f"{name}.csr"
    store.openssl("req", "-new", "-key", key.uri(), "-subj", f"/CN=csr for {name}/O=sks tests", "-out", csr)
    res = pt.plain_openssl("req", "-in", csr, "-verify", "-noout", "-text")
    text = res.stdout.decode() + res.stderr.decode()
    assert re.search(r"verify OK|self-signature verify OK", text), text
    assert f"ASN1 OID: {oid}" in text, text
    # Explicit parameters would show the field and curve coefficients.
    assert "Field Type" not in text and "Prime:" not in text, text
    assert "ecdsa-with-SHA256" in text
    assert f"CN = csr for {name}" in text


@pytest.mark.parametrize("name,alg", [("rsa2048", "sha256WithRSAEncryption"), ("ed25519", "ED25519")])
def test_csr_rsa_and_ed25519(store, name, alg):
    key = store.keys[name]
    csr = store.dir / f"{name}.csr"
    store.openssl("req", "-new", "-key", key.uri(), "-subj", f"/CN=csr for {name}", "-out", csr)
    res = pt.plain_openssl("req", "-in", csr, "-verify", "-noout", "-text")
    text = res.stdout.decode() + res.stderr.decode()
    assert "verify OK" in text, text
    assert f"Signature Algorithm: {alg}" in text, text


def selfsigned_ca(store, name):
    """A self-signed CA certificate whose key is in the store (openssl req -x509), made once."""
    key = store.keys[name]
    cert = store.dir / f"{name}.selfsigned.pem"
    if not cert.exists():
        store.openssl("req", "-x509", "-new", "-key", key.uri(), "-subj", f"/O=sks tests/CN=sks test root {name}",
                      "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", cert)
        res = pt.plain_openssl("verify", "-CAfile", cert, cert)
        assert res.stdout.strip().endswith(b": OK"), res.stdout
    return key, cert


@pytest.fixture(scope="module", params=["ca", "rsaca"])
def ca_cert(request, store):
    return selfsigned_ca(store, request.param)


@pytest.mark.parametrize("subject_key", ["soft", "p256", "ed25519"])
def test_x509_req_signed_by_ca_key_in_store(store, ca_cert, subject_key):
    """openssl x509 -req -CA ca.pem -CAkey sks:name=ca: the issued certificate verifies
    with a plain openssl verify."""
    ca_key, ca_pem = ca_cert
    csr = store.dir / f"leaf.{ca_key.name}.{subject_key}.csr"
    leaf = store.dir / f"leaf.{ca_key.name}.{subject_key}.pem"
    subj = f"/CN=leaf {subject_key}/O=sks tests"
    if subject_key == "soft":
        pt.plain_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                         "-keyout", store.dir / "leaf.soft.key", "-subj", subj, "-out", csr)
    else:
        store.openssl("req", "-new", "-key", store.keys[subject_key].uri(), "-subj", subj, "-out", csr)
    store.openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key.uri(), "-CAcreateserial",
                  "-CAserial", store.dir / f"{ca_key.name}.srl", "-days", "5", "-sha384", "-out", leaf)
    res = pt.plain_openssl("verify", "-CAfile", ca_pem, leaf)
    assert res.stdout.strip().endswith(b": OK"), res.stdout
    text = pt.plain_openssl("x509", "-in", leaf, "-noout", "-text").stdout.decode()
    assert f"CN = leaf {subject_key}" in text
    assert ("ecdsa-with-SHA384" if ca_key.kind == "ec" else "sha384WithRSAEncryption") in text


def test_x509_req_rsa_pss_ca_signature(store):
    """A certificate signed with RSA-PSS by the RSA CA key in the store."""
    ca_key, ca_pem = selfsigned_ca(store, "rsaca")
    csr, leaf = store.dir / "pss.csr", store.dir / "pss.pem"
    pt.plain_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", store.dir / "pss.key", "-subj", "/CN=leaf pss", "-out", csr)
    store.openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key.uri(), "-CAserial",
                  store.dir / "rsaca-pss.srl", "-CAcreateserial", "-days", "5", "-sha256",
                  "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-out", leaf)
    res = pt.plain_openssl("verify", "-CAfile", ca_pem, leaf)
    assert res.stdout.strip().endswith(b": OK"), res.stdout
    assert b"rsassaPss" in pt.plain_openssl("x509", "-in", leaf, "-noout", "-text").stdout


# ---------------------------------------------------------------------------------------------
# CMS
# ---------------------------------------------------------------------------------------------

CMS_SIGN = {
    "p256": [],
    "p384": ["-md", "sha384"],
    "bp512": ["-md", "sha512"],
    "rsa2048": [],
    "rsa2048-pss": ["-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:32"],
    "rsa3072": ["-md", "sha512"],
}


@pytest.mark.parametrize("case", list(CMS_SIGN))
def test_cms_sign_verified_by_default_provider(store, case):
    key = store.keys[case.split("-")[0]]
    signed = store.dir / f"signed.{case}.p7"
    store.openssl("cms", "-sign", "-signer", key.cert, "-inkey", key.uri(), "-in", store.dir / "content",
                  "-binary", "-nodetach", "-outform", "DER", "-out", signed, *CMS_SIGN[case])
    res = pt.plain_openssl("cms", "-verify", "-in", signed, "-inform", "DER", "-CAfile", store.issuer_ca,
                           "-binary")
    assert res.stdout == CONTENT
    assert b"Verification successful" in res.stderr
    if case.endswith("-pss"):
        printed = pt.plain_openssl("cms", "-cmsout", "-print", "-in", signed, "-inform", "DER").stdout
        assert b"rsassaPss" in printed


@pytest.mark.parametrize("with_recip", [True, False], ids=["recip", "no-recip"])
@pytest.mark.parametrize("name", ["rsa2048", "rsa3072", "p256", "p384", "p521", "bp256"])
def test_cms_encrypt_then_decrypt_in_store(store, name, with_recip):
    """openssl cms -encrypt by a plain OpenSSL to the key's certificate (RSA key transport,
    EC key agreement), decrypted with the key in the store."""
    key = store.keys[name]
    env = store.dir / f"enveloped.{name}.{with_recip}"
    pt.plain_openssl("cms", "-encrypt", "-recip", key.cert, "-aes256", "-binary", "-in", store.dir / "content",
                     "-outform", "DER", "-out", env)
    if key.kind == "ec":
        printed = pt.plain_openssl("cms", "-cmsout", "-print", "-in", env, "-inform", "DER").stdout
        assert b"originatorKey" in printed or b"dhSinglePass" in printed  # key agreement
    recip = ["-recip", key.cert] if with_recip else []
    res = store.openssl("cms", "-decrypt", "-in", env, "-inform", "DER", "-inkey", key.uri(), *recip, "-binary")
    assert res.stdout == CONTENT


# ---------------------------------------------------------------------------------------------
# openssl storeutl
# ---------------------------------------------------------------------------------------------

def entries(out):
    """storeutl's numbered entries: ['Pkey', 'Certificate', ...]."""
    return re.findall(r"^\d+: (.+)$", out.decode(), re.M)


def cert_subjects(out):
    """The subjects of the certificates storeutl printed as PEM."""
    pems = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", out, re.S)
    subjects = []
    for pem in pems:
        s = pt.plain_openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", input=pem).stdout.decode()
        subjects.append(s.strip().removeprefix("subject="))
    return subjects


def test_storeutl_lists_keys_and_certificates(store):
    res = store.openssl("storeutl", "sks:")
    kinds = entries(res.stdout)
    assert kinds.count("Pkey") == len(store.keys), kinds
    subjects = cert_subjects(res.stdout)
    for key in store.keys.values():
        assert key.subject_rfc2253 in subjects, (key.name, subjects)
    assert f"Total found: {len(kinds)}" in res.stdout.decode()


def test_storeutl_type_cert(store):
    res = store.openssl("storeutl", "sks:type=cert")
    kinds = entries(res.stdout)
    assert kinds and set(kinds) == {"Certificate"}, kinds
    subjects = cert_subjects(res.stdout)
    assert all(k.subject_rfc2253 in subjects for k in store.keys.values())


def test_storeutl_type_public(store):
    res = store.openssl("storeutl", "sks:type=public")
    kinds = entries(res.stdout)
    assert kinds == ["Public key"] * len(store.keys), kinds
    # The public keys are the certificates' public keys.
    pems = res.stdout.decode()
    for key in store.keys.values():
        assert key.pub.read_text() in pems, key.name


@pytest.mark.parametrize("by", ["name", "handle", "sha256"])
def test_storeutl_selects_one_key(store, by):
    key = store.keys["p384"]
    res = store.openssl("storeutl", key.uri(by))
    kinds = entries(res.stdout)
    assert kinds.count("Pkey") == 1, kinds
    assert cert_subjects(res.stdout)[0] == key.subject_rfc2253
    # Its public key, asked for by type=public with the same selector.
    res = store.openssl("storeutl", key.uri(by).replace("sks:", "sks:type=public;"))
    assert entries(res.stdout) == ["Public key"]
    assert key.pub.read_text() in res.stdout.decode()


def test_storeutl_certs_option_and_private_key_is_not_exported(store):
    key = store.keys["rsa2048"]
    res = store.openssl("storeutl", "-certs", key.uri())
    assert set(entries(res.stdout)) == {"Certificate"}
    assert cert_subjects(res.stdout)[0] == key.subject_rfc2253
    # Printing the "private key" shows no private material: the provider exports public
    # halves only.
    res = store.openssl("storeutl", "-keys", key.uri(), check=False)
    assert b"PRIVATE KEY-----" not in res.stdout
