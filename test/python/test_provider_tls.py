"""TLS 1.2 and 1.3 handshakes between openssl s_server and s_client on 127.0.0.1, with the
server's key in the store (the client is a plain OpenSSL), and with the client's key in the
store (s_server -Verify, a plain OpenSSL with its key in a file). Each handshake is checked
from both ends, and carries one line of application data.

    /usr/bin/python3 -m pytest test/python/test_provider_tls.py
"""

import re

import pytest

import provtools as pt

KEYS = [
    ("p256", "P-256", {"subject": "CN=tls p256, O=sks tests"}),
    ("p384", "P-384", {"subject": "CN=tls p384, O=sks tests"}),
    ("rsa2048", "RSA-2048", {"subject": "CN=tls rsa2048, O=sks tests"}),
    ("ed25519", "Ed25519", {"subject": "CN=tls ed25519, O=sks tests"}),
]
NAMES = [k[0] for k in KEYS]
VERSIONS = ["tls1_2", "tls1_3"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return pt.make_store(tmp_path_factory, "tls", KEYS)


@pytest.fixture(scope="module")
def soft(store):
    """The peer's own key and self-signed certificate, in files (default provider)."""
    return pt.soft_cert(store.dir, "soft peer")


def expected_sigtype(key, version):
    if key.kind == "ec":
        return ["ECDSA"]
    if key.kind == "ed25519":
        return ["ed25519"]
    # TLS 1.3 signs with RSA-PSS only; TLS 1.2 prefers it when both ends can.
    return ["RSA-PSS"] if version == "tls1_3" else ["RSA-PSS", "RSA"]


def peer_sigtype(output):
    m = re.search(r"^Peer signature type: (\S+)", output, re.M)
    return m.group(1) if m else None


def check_client_view(res, version, server_cn, sigtypes=None):
    out = res.client
    assert "Verification: OK" in out and "Verify return code: 0 (ok)" in out, res.explain()
    proto = "TLSv1.3" if version == "tls1_3" else "TLSv1.2"
    assert re.search(rf"^New, {proto}, Cipher is", out, re.M), res.explain()
    assert re.search(rf"^subject=.*CN = {re.escape(server_cn)}", out, re.M), res.explain()
    if sigtypes is not None:
        assert peer_sigtype(out) in sigtypes, res.explain()


def check_server_view(res, version, client_cn=None, sigtypes=None):
    out = res.server
    cipher = re.search(r"^CIPHER is (\S+)", out, re.M)
    assert cipher, res.explain()
    assert cipher.group(1).startswith("TLS_") == (version == "tls1_3"), res.explain()
    assert "ping from the client" in out, res.explain()
    if client_cn is not None:
        assert re.search(rf"^subject=.*CN = {re.escape(client_cn)}", out, re.M), res.explain()
        assert peer_sigtype(out) in sigtypes, res.explain()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", NAMES)
def test_server_key_in_store(store, tmp_path, name, version):
    key = store.keys[name]
    res = pt.tls_handshake(
        tmp_path,
        server_args=[*pt.PROV, "-cert", key.cert, "-key", key.uri(), f"-{version}"],
        server_env=store.env(),
        client_args=["-CAfile", store.issuer_ca, "-verify_return_error", f"-{version}"],
        client_env=pt.clean_env())
    check_client_view(res, version, f"tls {name}", expected_sigtype(key, version))
    check_server_view(res, version)


def test_tls12_rsa_pkcs1_signature(store, tmp_path):
    """TLS 1.2 with a client that only offers RSA PKCS#1 v1.5 signatures."""
    key = store.keys["rsa2048"]
    res = pt.tls_handshake(
        tmp_path,
        server_args=[*pt.PROV, "-cert", key.cert, "-key", key.uri(), "-tls1_2"],
        server_env=store.env(),
        client_args=["-CAfile", store.issuer_ca, "-verify_return_error", "-tls1_2", "-sigalgs", "RSA+SHA384"],
        client_env=pt.clean_env())
    check_client_view(res, "tls1_2", "tls rsa2048", ["RSA"])
    assert re.search(r"^Peer signing digest: SHA384", res.client, re.M), res.explain()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", NAMES)
def test_client_key_in_store(store, soft, tmp_path, name, version):
    key = store.keys[name]
    soft_key, soft_cert = soft
    res = pt.tls_handshake(
        tmp_path,
        server_args=["-cert", soft_cert, "-key", soft_key, "-Verify", "1", "-CAfile", store.issuer_ca,
                     "-verify_return_error", f"-{version}"],
        server_env=pt.clean_env(),
        client_args=[*pt.PROV, "-cert", key.cert, "-key", key.uri(), "-CAfile", soft_cert, "-verify_return_error",
                     f"-{version}"],
        client_env=store.env())
    check_client_view(res, version, "soft peer", ["ECDSA"])
    check_server_view(res, version, f"tls {name}", expected_sigtype(key, version))


@pytest.mark.parametrize("version", VERSIONS)
def test_both_keys_in_store(store, tmp_path, version):
    server, client = store.keys["rsa2048"], store.keys["p384"]
    res = pt.tls_handshake(
        tmp_path,
        server_args=[*pt.PROV, "-cert", server.cert, "-key", server.uri(), "-Verify", "1", "-CAfile",
                     store.issuer_ca, "-verify_return_error", f"-{version}"],
        server_env=store.env(),
        client_args=[*pt.PROV, "-cert", client.cert, "-key", client.uri("sha256"), "-CAfile", store.issuer_ca,
                     "-verify_return_error", f"-{version}"],
        client_env=store.env())
    check_client_view(res, version, "tls rsa2048", expected_sigtype(server, version))
    check_server_view(res, version, "tls p384", ["ECDSA"])


@pytest.fixture(scope="module")
def gdb_prefix(store):
    if pt.GDB is None:
        pytest.skip("gdb is not installed: device operations cannot be counted")
    return pt.gdb_counter(store.dir)


def ops_or_skip(output, where):
    counts = pt.gdb_counts(output)
    assert counts is not None, f"gdb printed no counts for the {where}:\n{output[-3000:]}"
    ops, calls = counts
    if calls == 0:
        pytest.skip(f"no sks symbols for gdb in {pt.PROVIDER} (stripped?)")
    return ops


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", ["p256", "rsa2048"])
def test_one_device_operation_per_handshake(store, soft, tmp_path, gdb_prefix, name, version):
    """Exactly one private-key operation reaches the device per handshake, on either side:
    verifying the peer (its certificate, its signature) never does."""
    key = store.keys[name]
    soft_key, soft_cert = soft
    # Client side: client authentication with the key in the store.
    res = pt.tls_handshake(
        tmp_path,
        server_args=["-cert", soft_cert, "-key", soft_key, "-Verify", "1", "-CAfile", store.issuer_ca,
                     "-verify_return_error", f"-{version}"],
        server_env=pt.clean_env(),
        client_args=[*pt.PROV, "-cert", key.cert, "-key", key.uri(), "-CAfile", soft_cert, "-verify_return_error",
                     f"-{version}"],
        client_env=store.env(), wrap_client=gdb_prefix, timeout=40)
    assert ops_or_skip(res.client, "client") == 1, res.explain()
    # Server side: the server's key in the store, a client certificate to verify too.
    res = pt.tls_handshake(
        tmp_path,
        server_args=[*pt.PROV, "-cert", key.cert, "-key", key.uri(), "-Verify", "1", "-CAfile", soft_cert,
                     "-verify_return_error", f"-{version}"],
        server_env=store.env(),
        client_args=["-cert", soft_cert, "-key", soft_key, "-CAfile", store.issuer_ca, "-verify_return_error",
                     f"-{version}"],
        client_env=pt.clean_env(), wrap_server=gdb_prefix, timeout=40)
    check_server_view(res, version, "soft peer", ["ECDSA"])
    assert ops_or_skip(res.server, "server") == 1, res.explain()
