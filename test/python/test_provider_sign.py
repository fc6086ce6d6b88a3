"""openssl pkeyutl -sign with keys in the store, through sks: URIs (by name, by handle, by
certificate fingerprint); every signature is verified by a plain OpenSSL (default provider
only) with the public key of the key's certificate.

    /usr/bin/python3 -m pytest test/python/test_provider_sign.py
"""

import hashlib

import pytest

import provtools as pt

KEYS = [
    ("p256", "P-256"),
    ("p384", "P-384"),
    ("p521", "P-521"),
    ("bp256", "brainpoolP256r1"),
    ("bp320", "brainpoolP320r1"),
    ("bp384", "brainpoolP384r1"),
    ("bp512", "brainpoolP512r1"),
    ("rsa2048", "RSA-2048"),
    ("rsa3072", "RSA-3072"),
    ("ed25519", "Ed25519"),
]
HASHED = [name for name, alg in KEYS if alg != "Ed25519"]
RSA = ["rsa2048", "rsa3072"]
DIGESTS = ["sha1", "sha224", "sha256", "sha384", "sha512"]
SELECTORS = ["name", "handle", "sha256"]
MESSAGE = b"signed by a key in the sks store\n" * 3


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return pt.make_store(tmp_path_factory, "sign", KEYS)


@pytest.fixture(scope="module")
def work(store):
    """Digests of MESSAGE, one file per algorithm."""
    files = {}
    (store.dir / "message").write_bytes(MESSAGE)
    for d in DIGESTS:
        f = store.dir / f"message.{d}"
        f.write_bytes(hashlib.new(d, MESSAGE).digest())
        files[d] = f
    files["message"] = store.dir / "message"
    return files


def sign(store, key, infile, out, *opts, by="name"):
    store.openssl("pkeyutl", "-sign", "-inkey", key.uri(by), "-in", infile, "-out", out, *opts)
    return out.read_bytes()


def verify(key, infile, sigfile, *opts):
    """A plain `openssl pkeyutl -verify` with the certificate's public key."""
    res = pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", key.cert, "-in", infile, "-sigfile", sigfile,
                           *opts)
    assert b"Signature Verified Successfully" in res.stdout, res.stdout


@pytest.mark.parametrize("by", SELECTORS)
@pytest.mark.parametrize("digest", DIGESTS)
@pytest.mark.parametrize("name", HASHED)
def test_sign_hash(store, work, name, digest, by):
    key = store.keys[name]
    sig = store.dir / f"sig.{name}.{digest}.{by}"
    opts = ["-pkeyopt", f"digest:{digest}"]
    sign(store, key, work[digest], sig, *opts, by=by)
    verify(key, work[digest], sig, *opts)


@pytest.mark.parametrize("by", SELECTORS)
def test_sign_ed25519_rawin(store, work, by):
    key = store.keys["ed25519"]
    sig = store.dir / f"sig.ed25519.{by}"
    data = sign(store, key, work["message"], sig, "-rawin", by=by)
    assert len(data) == 64
    verify(key, work["message"], sig, "-rawin")


def test_ed25519_long_message(store):
    """Ed25519 signs the message itself: a message far larger than any hash."""
    key = store.keys["ed25519"]
    msg = store.dir / "long-message"
    msg.write_bytes(bytes(range(256)) * 200)
    sig = store.dir / "sig.ed25519.long"
    sign(store, key, msg, sig, "-rawin")
    verify(key, msg, sig, "-rawin")


PSS = {
    "default": [],                                  # salt length = digest length
    "salt20": ["-pkeyopt", "rsa_pss_saltlen:20"],
    "saltmax": ["-pkeyopt", "rsa_pss_saltlen:max"],
    "mgf1sha1": ["-pkeyopt", "rsa_mgf1_md:sha1"],
    "salt20-mgf1sha512": ["-pkeyopt", "rsa_pss_saltlen:20", "-pkeyopt", "rsa_mgf1_md:sha512"],
    "saltmax-mgf1sha256": ["-pkeyopt", "rsa_pss_saltlen:max", "-pkeyopt", "rsa_mgf1_md:sha256"],
}


@pytest.mark.parametrize("params", list(PSS))
@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
@pytest.mark.parametrize("name", RSA)
def test_sign_rsa_pss(store, work, name, digest, params):
    key = store.keys[name]
    sig = store.dir / f"sig.pss.{name}.{digest}.{params}"
    opts = ["-pkeyopt", f"digest:{digest}", "-pkeyopt", "rsa_padding_mode:pss", *PSS[params]]
    sign(store, key, work[digest], sig, *opts)
    # The verifier is told the same parameters: a signature made with other ones fails.
    verify(key, work[digest], sig, *opts)


def test_rsa_pss_salt_length_is_what_was_asked(store, work):
    """Salt 20 and salt max give different encodings: verifying a salt-20 signature as
    salt-max must fail (the device really used the requested salt length)."""
    key = store.keys["rsa2048"]
    sig = store.dir / "sig.pss.salt20.check"
    base = ["-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss"]
    sign(store, key, work["sha256"], sig, *base, "-pkeyopt", "rsa_pss_saltlen:20")
    res = pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", key.cert, "-in", work["sha256"], "-sigfile",
                           sig, *base, "-pkeyopt", "rsa_pss_saltlen:max", check=False)
    assert b"Signature Verified Successfully" not in res.stdout
    verify(key, work["sha256"], sig, *base, "-pkeyopt", "rsa_pss_saltlen:20")


def test_signature_over_other_data_does_not_verify(store, work):
    """The verifier is not trivially satisfied: a signature checked against another hash fails."""
    key = store.keys["p256"]
    sig = store.dir / "sig.tamper"
    sign(store, key, work["sha256"], sig, "-pkeyopt", "digest:sha256")
    other = store.dir / "other.sha256"
    other.write_bytes(hashlib.sha256(b"something else").digest())
    res = pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", key.cert, "-in", other, "-sigfile", sig,
                           check=False)
    assert res.returncode != 0 and b"Signature Verified Successfully" not in res.stdout


@pytest.mark.parametrize("name", ["p256", "bp384", "rsa2048"])
def test_dgst_sign_whole_message(store, work, name):
    """openssl dgst -sign (EVP_DigestSign: hashing in the provider, one signature on the
    device), verified by a plain openssl dgst -verify. (OpenSSL 3.0's dgst has no Ed25519.)"""
    key = store.keys[name]
    sig = store.dir / f"dgst.{name}.sig"
    store.openssl("dgst", "-sha384", "-sign", key.uri(), "-out", sig, work["message"])
    res = pt.plain_openssl("dgst", "-sha384", "-verify", key.pub, "-signature", sig, work["message"])
    assert b"Verified OK" in res.stdout
