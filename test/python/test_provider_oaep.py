"""OAEP as applications send it (issue 12): any of SHA-1/224/256/384/512 for the OAEP hash
and for MGF1, and a label, encrypted by a plain OpenSSL (default provider, the certificate's
public key) and decrypted through the sks provider with the key in the store; CMS
enveloped data with RSAES-OAEP parameters; the uniform failure for a wrong label or a
tampered ciphertext; and the endorsement rules for the project's rsa.oaep URI.

    /usr/bin/python3 -m pytest test/python/test_provider_oaep.py
"""

import pytest

import provtools as pt

SKS_ALG = "https://webpki.github.io/sks/algorithm#"
OAEP_SHA256 = SKS_ALG + "rsa.oaep.sha256"
OAEP_GENERIC = SKS_ALG + "rsa.oaep"

DIGESTS = ["sha1", "sha224", "sha256", "sha384", "sha512"]
LABEL = "0011223344556677889900aabbccddeeff"
CONTENT = b"content for OAEP key transport\n"
UNIFORM = "decryption with key #"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = pt.make_store(tmp_path_factory, "oaep", [
        ("rsa", "RSA-2048"),
        ("rsa3072", "RSA-3072"),
        ("spec_only", "RSA-2048", {"endorse": [OAEP_SHA256]}),
        ("generic_only", "RSA-2048", {"endorse": [OAEP_GENERIC]}),
    ])
    (s.dir / "content").write_bytes(CONTENT)
    return s


def oaep_opts(md, mgf1=None, label=None):
    opts = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", f"rsa_oaep_md:{md}"]
    if mgf1 is not None:
        opts += ["-pkeyopt", f"rsa_mgf1_md:{mgf1}"]
    if label is not None:
        opts += ["-pkeyopt", f"rsa_oaep_label:{label}"]
    return opts


def encrypt(store, key, secret, opts, tag):
    plain, ct = store.dir / f"pt.{tag}", store.dir / f"ct.{tag}"
    plain.write_bytes(secret)
    pt.plain_openssl("pkeyutl", "-encrypt", "-certin", "-inkey", key.cert, "-in", plain, "-out", ct, *opts)
    return ct


def decrypt(store, key, ct, opts, tag):
    out = store.dir / f"dec.{tag}"
    store.openssl("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct, "-out", out, *opts)
    return out.read_bytes()


@pytest.mark.parametrize("label", [None, LABEL], ids=["nolabel", "label"])
@pytest.mark.parametrize("mgf1", DIGESTS)
@pytest.mark.parametrize("md", DIGESTS)
def test_pkeyutl_every_oaep_and_mgf1_digest(store, md, mgf1, label):
    key = store.keys["rsa"]
    tag = f"{md}.{mgf1}.{label is not None}"
    secret = f"secret under OAEP-{md} MGF1-{mgf1}".encode()
    opts = oaep_opts(md, mgf1, label)
    ct = encrypt(store, key, secret, opts, tag)
    assert decrypt(store, key, ct, opts, tag) == secret


@pytest.mark.parametrize("md,mgf1", [("sha256", "sha1"), ("sha512", "sha384")])
def test_pkeyutl_rsa3072_with_label(store, md, mgf1):
    key = store.keys["rsa3072"]
    secret = b"k" * 32
    opts = oaep_opts(md, mgf1, LABEL)
    ct = encrypt(store, key, secret, opts, f"3072.{md}.{mgf1}")
    assert decrypt(store, key, ct, opts, f"3072.{md}.{mgf1}") == secret


def uniform_error(err):
    """The device's one answer for every OAEP failure, with the key number blanked."""
    lines = [line for line in err.splitlines() if UNIFORM in line]
    assert lines, err
    return lines[0].split(UNIFORM)[1].split(" ", 1)[1]


def test_wrong_label_and_tampered_ciphertext_fail_alike(store):
    key = store.keys["rsa"]
    opts = oaep_opts("sha256", "sha1", LABEL)
    ct = encrypt(store, key, b"attack at dawn", opts, "uniform")
    wrong_label = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct,
                                      *oaep_opts("sha256", "sha1", LABEL[:-2] + "00"))
    no_label = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct,
                                   *oaep_opts("sha256", "sha1"))
    wrong_mgf1 = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct,
                                     *oaep_opts("sha256", "sha256", LABEL))
    tampered = store.dir / "ct.tampered"
    data = bytearray(ct.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    bad_ct = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", tampered, *opts)
    answers = {uniform_error(e) for e in (wrong_label, no_label, wrong_mgf1, bad_ct)}
    assert answers == {"failed"}, answers
    for err in (wrong_label, no_label, wrong_mgf1, bad_ct):
        assert "attack at dawn" not in err


def test_unsupported_digest_is_refused_clearly(store):
    key = store.keys["rsa"]
    opts = oaep_opts("sha3-256")
    ct = encrypt(store, key, b"x", opts, "sha3")
    err = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct, *opts)
    assert "OAEP with SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512" in err, err
    err = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct,
                              *oaep_opts("sha256", "sha3-256"))
    assert "MGF1 digest sha3-256" in err, err


# ---------------------------------------------------------------------------------------------
# Endorsement: the specification's URIs name only their own variant; rsa.oaep names all OAEP
# ---------------------------------------------------------------------------------------------

def test_key_endorsed_for_spec_uri_only(store):
    """Endorsed for rsa.oaep.sha256: OAEP-SHA256 with MGF1-SHA256 and no label works (the
    provider sends the specification's URI); MGF1-SHA1 or a label is another scheme the
    issuer did not allow, refused before the device is asked."""
    key = store.keys["spec_only"]
    opts = oaep_opts("sha256")
    ct = encrypt(store, key, b"spec", opts, "spec_only")
    assert decrypt(store, key, ct, opts, "spec_only") == b"spec"
    for other in (oaep_opts("sha256", "sha1"), oaep_opts("sha256", "sha256", LABEL)):
        ct = encrypt(store, key, b"x", other, "spec_only.other")
        err = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct, *other)
        assert "not endorsed for" in err and OAEP_GENERIC in err, err


def test_key_endorsed_for_generic_uri_does_every_oaep(store):
    """Endorsed for rsa.oaep only: every OAEP variant, also those the specification's URIs
    name (then sent as rsa.oaep with their parameters); PKCS#1 v1.5 is not OAEP."""
    key = store.keys["generic_only"]
    for i, opts in enumerate([oaep_opts("sha1"), oaep_opts("sha256"), oaep_opts("sha256", "sha1", LABEL)]):
        ct = encrypt(store, key, b"generic %d" % i, opts, f"generic.{i}")
        assert decrypt(store, key, ct, opts, f"generic.{i}") == b"generic %d" % i
    ct = encrypt(store, key, b"v15", [], "generic.v15")
    err = store.openssl_fails("pkeyutl", "-decrypt", "-inkey", key.uri(), "-in", ct)
    assert "not endorsed for" in err and "rsa.es.pkcs1_5" in err, err


# ---------------------------------------------------------------------------------------------
# CMS enveloped data with RSAES-OAEP key transport
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("md,mgf1,label", [
    ("sha256", "sha1", None),       # Java's OAEPWithSHA-256AndMGF1Padding, many CMS producers
    ("sha256", "sha256", None),
    ("sha1", "sha1", None),
    ("sha384", "sha1", None),
    ("sha512", "sha256", None),
    ("sha256", "sha1", LABEL),
])
def test_cms_oaep_decrypted_in_store(store, md, mgf1, label):
    key = store.keys["rsa"]
    env = store.dir / f"cms.{md}.{mgf1}.{label is not None}"
    keyopts = ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", f"rsa_oaep_md:{md}", "-keyopt", f"rsa_mgf1_md:{mgf1}"]
    if label is not None:
        keyopts += ["-keyopt", f"rsa_oaep_label:{label}"]
    pt.plain_openssl("cms", "-encrypt", "-recip", key.cert, *keyopts, "-aes256", "-binary",
                     "-in", store.dir / "content", "-outform", "DER", "-out", env)
    printed = pt.plain_openssl("cms", "-cmsout", "-print", "-in", env, "-inform", "DER").stdout
    assert b"rsaesOaep" in printed, printed
    if md != "sha1":
        assert md.encode() in printed, printed
    if label is not None:
        assert b"pSpecified" in printed and label[-8:].upper().encode() in printed.upper(), printed
    res = store.openssl("cms", "-decrypt", "-in", env, "-inform", "DER", "-inkey", key.uri(),
                        "-recip", key.cert, "-binary")
    assert res.stdout == CONTENT
