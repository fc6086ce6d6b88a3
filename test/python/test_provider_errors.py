"""What goes wrong, and how the provider says it: wrong PIN, locked key, unknown key,
malformed sks: URIs, operations the key is not endorsed for, missing PIN. Each failure must
name the problem, and cost no more than the one PIN attempt the user made (counted by the
device: getKeyProtectionInfo). Also: every way of giving the PIN works.

    /usr/bin/python3 -m pytest test/python/test_provider_errors.py
"""

import hashlib
import itertools
import os

import pytest

import provtools as pt
import sksissuer

PIN = "1234"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = pt.make_store(tmp_path_factory, "errors", [("plain", "P-256")])
    (s.dir / "h256").write_bytes(hashlib.sha256(b"data").digest())
    (s.dir / "h512").write_bytes(hashlib.sha512(b"data").digest())
    return s


def new_pin_key(store, alg="P-256", **kw):
    """A fresh PIN-protected key for one test (its error counter starts at 0)."""
    kw.setdefault("pin", PIN)
    return store.generate(f"pinned{next(_names)}", alg, **kw)


def sign_args(store, uri, digest="sha256"):
    return ["pkeyutl", "-sign", "-inkey", uri, "-in", store.dir / f"h{digest[3:]}", "-pkeyopt", f"digest:{digest}",
            "-out", store.dir / "sig"]


def sign_ok(store, uri, digest="sha256", **kw):
    store.openssl(*sign_args(store, uri, digest), **kw)


def sign_fails(store, uri, digest="sha256", **kw):
    return store.openssl_fails(*sign_args(store, uri, digest), **kw)


def errors_counted(store, key):
    return store.protection(key).pin_error_count


def test_wrong_pin_costs_exactly_one_attempt(store):
    key = new_pin_key(store)
    assert errors_counted(store, key) == 0
    err = sign_fails(store, key.uri(pin="wrong"))
    assert "wrong PIN" in err, err
    assert errors_counted(store, key) == 1
    entry = store.entry(key.name)
    assert entry["pin_protected"] is True and entry["pin_blocked"] is False
    # The right PIN works and clears the count.
    sign_ok(store, key.uri(pin=PIN))
    assert errors_counted(store, key) == 0


def test_wrong_pin_in_a_tls_handshake_costs_one_attempt(store, tmp_path):
    """A TLS client whose key has a wrong PIN: the handshake fails after one device attempt
    (OpenSSL does not retry with other signature algorithms on the device)."""
    key = new_pin_key(store)
    soft_key, soft_cert = pt.soft_cert(tmp_path, "server")
    res = pt.tls_handshake(
        tmp_path,
        server_args=["-cert", soft_cert, "-key", soft_key, "-Verify", "1", "-CAfile", store.issuer_ca,
                     "-verify_return_error", "-tls1_3"],
        server_env=pt.clean_env(),
        client_args=[*pt.PROV, "-cert", key.cert, "-key", key.uri(pin="wrong"), "-CAfile", soft_cert, "-tls1_3"],
        client_env=store.env(), expect_ok=False)
    assert "CIPHER is" not in res.server, res.explain()
    assert "wrong PIN" in res.client, res.explain()
    assert errors_counted(store, key) == 1


def test_locked_key_is_refused_at_load(store):
    key = new_pin_key(store, pin_retries=3)
    for i in range(1, 4):
        err = sign_fails(store, key.uri(pin=f"bad{i}"))
        assert "wrong PIN" in err, err
        assert errors_counted(store, key) == i
    assert "locked" in err, err  # the attempt that locked it says so
    assert store.entry(key.name)["pin_blocked"] is True
    # Even the right PIN: the key is locked, and the load says so without another attempt.
    err = sign_fails(store, key.uri(pin=PIN))
    assert "locked" in err, err
    assert "wrong PIN for the sks key" not in err, err
    assert errors_counted(store, key) == 3


def test_unknown_name(store):
    err = sign_fails(store, "sks:name=no-such-key")
    assert "no key in the sks store matches the URI: name=no-such-key" in err, err


def test_unknown_handle(store):
    err = sign_fails(store, "sks:handle=4000000")
    assert "4000000" in err and "does not exist" in err, err


@pytest.mark.parametrize("uri,says", [
    ("sks:foo", "attribute without '='"),
    ("sks:handle=x", "handle must be a positive decimal number"),
    ("sks:handle=0", "handle must be a positive decimal number"),
    ("sks:sha256=abcd", "sha256 must be 32 bytes of hex"),
    ("sks:type=secret", "type must be private, public or cert"),
    ("sks:colour=blue", "unknown attribute"),
    ("sks:name=plain;name=plain", "repeated or empty"),
    ("sks:name=a%zz", "bad percent-encoding"),
    ("sks:name=plain?pin-value=1&pin-value=2", "more than one PIN"),
    ("sks:name=plain?pin-source=env:PIN", "pin-source must be file:PATH"),
    ("sks:name=plain?secret=1", "unknown query attribute"),
])
def test_malformed_uri(store, uri, says):
    err = sign_fails(store, uri)
    assert "malformed sks: URI" in err and says in err, err


def test_pin_file_missing(store):
    missing = store.dir / "no-such-pin-file"
    err = sign_fails(store, f"sks:name=plain?pin-source=file:{missing}")
    assert "pin-source" in err and "cannot read the PIN file" in err, err
    assert not [line for line in provider_lines(err) if str(missing) in line], err


# A PIN-looking value that must never come back in the provider's messages.
SECRET = "739182"


def provider_lines(err):
    """The lines the sks provider put on OpenSSL's error queue (library "sks"). OpenSSL's apps
    and its file loader quote the URI as given by themselves ("Could not open file or uri ...
    sks:..."), which no provider can prevent: a URI on a command line is visible anyway, and
    docs say to use pin-source=file: there."""
    return [line for line in err.splitlines() if ":sks:" in line]


@pytest.mark.parametrize("query,says", [
    (f"?{SECRET}", "query element without '='"),
    (f"?pin-value=1&{SECRET}", "query element without '='"),
    (f"?pin-source={SECRET}", "pin-source must be file:PATH"),
    (f"?pin-value={SECRET}%zz", "bad percent-encoding"),
    (f"?pin-value={SECRET}&pin-value={SECRET}", "more than one PIN"),
    (f"?pin-source=file:/nonexistent/{SECRET}", "cannot read the PIN file"),
])
@pytest.mark.parametrize("tool", ["pkeyutl", "storeutl"])
def test_malformed_query_never_echoes_its_values(store, query, says, tool):
    uri = "sks:name=plain" + query
    err = sign_fails(store, uri) if tool == "pkeyutl" else store.openssl_fails("storeutl", uri)
    lines = provider_lines(err)
    assert any(says in line for line in lines), err
    assert not [line for line in lines if SECRET in line], err


def test_not_endorsed_operation_costs_no_pin_attempt(store):
    key = new_pin_key(store, endorse=[pt.ECDSA_SHA256])
    assert store.entry(key.name)["endorsed"] == [pt.ECDSA_SHA256]
    # A wrong PIN on purpose: had the request reached the device, it would be counted.
    err = sign_fails(store, key.uri(pin="wrong"), digest="sha512")
    assert "not endorsed" in err and "ecdsa-sha512" in err, err
    assert "wrong PIN" not in err, err
    assert errors_counted(store, key) == 0
    # What it is endorsed for works.
    sign_ok(store, key.uri(pin=PIN), digest="sha256")
    pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", key.cert, "-in", store.dir / "h256", "-sigfile",
                     store.dir / "sig", "-pkeyopt", "digest:sha256")


def test_missing_pin_is_not_a_wrong_pin(store):
    """No PIN anywhere (and no terminal for the passphrase prompt): the load says a PIN is
    needed and how to give it; no attempt is counted."""
    key = new_pin_key(store)
    err = sign_fails(store, key.uri())
    assert "needs a PIN" in err and "pin-value" in err, err
    assert errors_counted(store, key) == 0


# ---------------------------------------------------------------------------------------------
# Where the PIN comes from
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pinned(store):
    return new_pin_key(store)


def verify_sig(store, key):
    res = pt.plain_openssl("pkeyutl", "-verify", "-certin", "-inkey", key.cert, "-in", store.dir / "h256",
                           "-sigfile", store.dir / "sig", "-pkeyopt", "digest:sha256")
    assert b"Signature Verified Successfully" in res.stdout


def test_pin_from_uri_value(store, pinned):
    sign_ok(store, pinned.uri(pin=PIN))
    verify_sig(store, pinned)


def test_pin_from_uri_value_percent_encoded(store):
    key = new_pin_key(store, pin="12&4 x")
    sign_ok(store, key.uri() + "?pin-value=12%264%20x")
    verify_sig(store, key)


@pytest.mark.parametrize("by", ["name", "handle", "sha256"])
def test_pin_from_file(store, pinned, by):
    pinfile = store.dir / "pin.txt"
    pinfile.write_text(PIN + "\n")
    sign_ok(store, pinned.uri(by, **{"pin-source": f"file:{pinfile}"}))
    verify_sig(store, pinned)
    assert errors_counted(store, pinned) == 0


def test_pin_from_provider_config(store, pinned, tmp_path):
    """`pin =` in the provider's section of openssl.cnf (generated from openssl.cnf.d)."""
    cnf = pt.write_openssl_conf(tmp_path / "openssl.cnf", store, pin=PIN)
    env = pt.clean_env(OPENSSL_CONF=cnf)
    pt.run([pt.OPENSSL, *sign_args(store, pinned.uri())], env=env)
    verify_sig(store, pinned)
    # The URI's PIN wins over the configuration's.
    err = pt.run_fails([pt.OPENSSL, *sign_args(store, pinned.uri(pin="wrong"))], env=env)
    assert "wrong PIN" in err, err
    assert errors_counted(store, pinned) == 1
    pt.run([pt.OPENSSL, *sign_args(store, pinned.uri())], env=env)
    assert errors_counted(store, pinned) == 0


def test_pin_from_passphrase_callback(store, pinned):
    """No PIN in the URI or configuration: the application's passphrase (-passin) is asked."""
    store.openssl(*sign_args(store, pinned.uri()), "-passin", f"pass:{PIN}")
    verify_sig(store, pinned)


# ---------------------------------------------------------------------------------------------
# Two keys with one friendly name
# ---------------------------------------------------------------------------------------------

# Loads a URI twice in ONE process (the provider remembers which handle a name resolved to)
# and prints, per load, the SubjectPublicKeyInfo of every private key it yields.
LOAD_TWICE = r"""
import ctypes, sys
c = ctypes.CDLL("libcrypto.so.3")
c.OSSL_PROVIDER_load.restype = ctypes.c_void_p
c.OSSL_STORE_open.restype = ctypes.c_void_p
c.OSSL_STORE_load.restype = ctypes.c_void_p
c.OSSL_STORE_load.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_eof.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_close.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_INFO_get_type.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_INFO_get0_PKEY.restype = ctypes.c_void_p
c.OSSL_STORE_INFO_get0_PKEY.argtypes = [ctypes.c_void_p]
c.OSSL_STORE_INFO_free.argtypes = [ctypes.c_void_p]
c.i2d_PUBKEY.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
assert c.OSSL_PROVIDER_load(None, b"default") and c.OSSL_PROVIDER_load(None, b"sks")
for _ in range(2):
    s = c.OSSL_STORE_open(sys.argv[1].encode(), None, None, None, None)
    keys = []
    while s and not c.OSSL_STORE_eof(s):
        i = c.OSSL_STORE_load(s)
        if i and c.OSSL_STORE_INFO_get_type(i) == 4:  # OSSL_STORE_INFO_PKEY
            k = c.OSSL_STORE_INFO_get0_PKEY(i)
            buf = ctypes.create_string_buffer(1024)
            p = ctypes.c_char_p(ctypes.addressof(buf))
            n = c.i2d_PUBKEY(ctypes.c_void_p(k), ctypes.byref(p))
            keys.append(buf.raw[:n].hex())
        if i:
            c.OSSL_STORE_INFO_free(i)
    if s:
        c.OSSL_STORE_close(s)
    print(",".join(keys))
"""


def test_duplicate_name_resolves_to_the_lowest_handle_on_every_load(tmp_path_factory, tmp_path):
    """Names need not be unique on the device (another issuer can reuse one). sks:name=N picks
    the key with the lowest handle, on the first load (a scan) and the later ones (the name
    hint) alike; before, the first load took the first key and later loads the last."""
    dups = pt.make_store(tmp_path_factory, "dups", [("dup", "P-256")])
    first = dups.entry("dup")
    dev = sksissuer.Device(pt.SKS, dups.path, stderr_path=tmp_path / "device.stderr")
    try:
        iss = sksissuer.Issuer(dev, ca=sksissuer.CertificateAuthority()).open()
        second = iss.provision_key(friendly_name="dup")
        iss.close()
    finally:
        dev.close()
    assert second.handle > int(first["handle"])
    assert [e["name"] for e in dups.list_json()].count("dup") == 2
    spki = pt.plain_openssl("x509", "-in", "/dev/stdin", "-pubkey", "-noout",
                            input=dups.sks("cert", "--handle", str(first["handle"])).stdout).stdout
    first_spki = pt.plain_openssl("pkey", "-pubin", "-outform", "DER", input=spki).stdout.hex()
    env = dups.env()
    # With an instrumented provider (scripts/test.sh --sanitize) its runtime must come first.
    if os.environ.get("SKS_SANITIZER_RUNTIME"):
        env["LD_PRELOAD"] = os.environ["SKS_SANITIZER_RUNTIME"]
    res = pt.run(["/usr/bin/python3", "-c", LOAD_TWICE, "sks:name=dup"], env=env)
    loads = res.stdout.decode().split()
    assert loads == [first_spki, first_spki], loads
