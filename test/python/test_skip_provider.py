"""SKIP packages through OpenSSL itself: with `skip-trust` in the sks provider's
configuration, loading a package file with OSSL_STORE (the openssl CLI's -inkey) or with
OSSL_DECODER_CTX_new_for_pkey imports it into the device once and yields the imported keys
as sks keys; loading it again yields the same keys and changes nothing. Without trust
anchors, or with the wrong ones, the provider refuses and the store stays as it was.
Every signature is checked by plain OpenSSL against the issuer's certificate.
"""

import pytest

import skipissuer as si
import skiptools as st

TYPES = ["secp384r1", "ed25519", "brainpoolP320r1"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return st.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def ready(tmp_path, pki):
    """A store with a pending request and the package that answers it (DER and PEM)."""
    store = st.SkipStore(tmp_path)
    req = store.request("brainpoolP384r1", pki[2])
    pkg = si.Package.issue(req, pki[1], TYPES, 256)
    der = store.write("package.der", pkg.der())
    pem = store.write("package.pem", pkg.pem())
    return store, pkg, der, pem


def _stored(store, pkg):
    keys = store.key_paths()
    ees = {path[0] for _, path in keys.values() if path}
    return [k.cert in ees for k in pkg.keys]


@pytest.mark.parametrize("form", ["der", "pem"])
def test_openssl_cli_loads_a_package_as_a_key(ready, pki, form):
    store, pkg, der, pem = ready
    env = store.provider_env(trust=pki[2])
    message = b"signed with a key that arrived in a SKIP package"
    signature = store.sign(der if form == "der" else pem, message, "secp384r1", env=env)
    assert isinstance(signature, bytes), signature
    store.verify(pkg.keys[0].cert, message, signature, "secp384r1")
    assert _stored(store, pkg) == [True, True, True], "not every key of the package was imported"
    assert not store.open_skip_sessions()
    # Again: nothing changes, and the same key signs.
    before = store.snapshot()
    signature = store.sign(der, message + b" again", "secp384r1", env=env)
    store.verify(pkg.keys[0].cert, message + b" again", signature, "secp384r1")
    assert store.snapshot() == before, "loading the package again changed the store"


def test_storeutl_sees_one_private_key(ready, pki):
    store, _, der, _ = ready
    res = st.run(["openssl", "storeutl", der], env=store.provider_env(trust=pki[2]), cwd=store.dir)
    assert b"0: Pkey" in res.stdout and b"Total found: 1" in res.stdout


@pytest.mark.parametrize("keytype,index", [("EC", 0), ("ED25519", 1), ("any", 0)])
def test_ossl_decoder_new_for_pkey(ready, pki, keytype, index):
    store, pkg, der, _ = ready
    msg = store.write("message.bin", b"OSSL_DECODER_CTX_new_for_pkey")
    sig = store.dir / "decoded.sig"
    res = st.run([st.SKIP_DECODE, der, "DER", keytype, msg, sig], env=store.provider_env(trust=pki[2]))
    out = res.stdout.decode()
    assert "provider: sks" in out, f"the key is not an sks key:\n{out}"
    k = pkg.keys[index]
    store.verify(k.cert, b"OSSL_DECODER_CTX_new_for_pkey", sig.read_bytes(), k.kind)
    # The same package decodes again to the same key, from the store.
    before = store.snapshot()
    again = st.run([st.SKIP_DECODE, der, "DER", keytype, msg, sig], env=store.provider_env(trust=pki[2]))
    assert again.stdout == res.stdout
    assert store.snapshot() == before


def test_ossl_decoder_pem_input(ready, pki):
    store, pkg, _, pem = ready
    msg = store.write("message.bin", b"PEM")
    sig = store.dir / "decoded.sig"
    res = st.run([st.SKIP_DECODE, pem, "PEM", "ED25519", msg, sig], env=store.provider_env(trust=pki[2]))
    assert b"provider: sks" in res.stdout
    store.verify(pkg.keys[1].cert, b"PEM", sig.read_bytes(), "ed25519")


def test_refused_without_trust_anchors(ready):
    store, pkg, der, _ = ready
    before = store.snapshot()
    res = store.sign(der, b"x", "secp384r1", env=store.provider_env(trust=None), check=False)
    assert not isinstance(res, bytes), "a package was used without trust anchors"
    assert b"no trust anchors (set skip-trust" in res.stderr, res.stderr.decode(errors="replace")
    assert store.snapshot() == before
    assert len(store.open_skip_sessions()) == 1
    assert _stored(store, pkg) == [False, False, False]


def test_refused_with_other_trust_anchors(ready, tmp_path):
    store, pkg, der, _ = ready
    other = store.write("other-root.pem", si.Ca("another root").pem)
    before = store.snapshot()
    res = store.sign(der, b"x", "secp384r1", env=store.provider_env(trust=other), check=False)
    assert not isinstance(res, bytes)
    assert b"does not verify to the trust anchors" in res.stderr, res.stderr.decode(errors="replace")
    assert store.snapshot() == before


def test_ordinary_key_files_still_load(ready, pki, tmp_path):
    """The package decoder sees every DER the application decodes and must stay out of the
    way of everything that is not a SKIP package."""
    store, _, _, _ = ready
    key = tmp_path / "plain.key"
    st.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
    der_key = tmp_path / "plain.der"
    st.run(["openssl", "pkey", "-in", key, "-outform", "DER", "-out", der_key])
    env = store.provider_env(trust=pki[2])
    for k in (key, der_key):
        res = st.run(["openssl", "pkey", "-in", k, "-inform", "DER" if k == der_key else "PEM", "-pubout"], env=env)
        assert res.stdout.startswith(b"-----BEGIN PUBLIC KEY-----")
