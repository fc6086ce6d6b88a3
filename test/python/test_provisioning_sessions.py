"""Device information and provisioning sessions: key agreement on every curve, E2ES and
privacy-enabled attestations, enumeration, abort, persistence, handle uniqueness."""

import sqlite3
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

import sksissuer as s
from skshelpers import (assert_no_trace, assert_session_state, expect_error, find_session,
                        sign_and_verify)

MANDATORY_AND_PROJECT_ALGORITHMS = [
    s.ENC_AES128_CBC, s.ENC_AES192_CBC, s.ENC_AES256_CBC, s.ENC_AES_CBC, s.ENC_AES_ECB_NOPAD,
    s.HMAC_SHA1, s.HMAC_SHA256, s.HMAC_SHA384, s.HMAC_SHA512,
    s.ASYM_RSA_PKCS1, s.ASYM_RSA_OAEP_SHA1, s.ASYM_RSA_OAEP_SHA256, s.ASYM_RSA_OAEP, s.KA_ECDH_RAW,
    s.SIG_RSA_SHA256, s.SIG_RSA_SHA384, s.SIG_RSA_SHA512, s.SIG_ECDSA_SHA256,
    s.SIG_ECDSA_SHA384, s.SIG_ECDSA_SHA512, s.SIG_RSA_NONE, s.SIG_ECDSA_NONE,
    s.SIG_RSA_PSS_SHA256, s.SIG_RSA_PSS_SHA384, s.SIG_RSA_PSS_SHA512,
    s.ALG_SESSION_1, s.ALG_KEY_1, s.ALG_NONE,
] + list(s.KEY_ALGORITHMS)


def test_device_info(device):
    info = device.get_device_info()
    assert info.api_level >= 100
    assert info.device_type & 0xF0 == 0, "deviceType bits 4-7 are reserved"
    assert 1 <= len(info.vendor_name) <= 128
    assert 1 <= len(info.vendor_description) <= 1000
    assert info.certificates, "getDeviceInfo must list the device certificate path"
    certs = [x509.load_der_x509_certificate(c) for c in info.certificates]
    key = certs[0].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1", \
        "the device key is P-256"
    for child, parent in zip(certs, certs[1:]):
        assert child.issuer == parent.subject, "device certificate path is not contiguous"
    assert len(set(info.algorithms)) == len(info.algorithms), "duplicate algorithm URIs"
    missing = [a for a in MANDATORY_AND_PROJECT_ALGORITHMS if a not in info.algorithms]
    assert not missing, f"supportedAlgorithm lacks {missing}"
    assert info.crypto_data_size >= 16384
    assert info.extension_data_size >= 65536
    assert info.update_url == ""
    expect_error(device.update_firmware, b"\x00" * 16, codes=(s.ERROR_NOT_AVAILABLE,))


def test_device_certificate_is_stable(device, store, sks_binary, tmp_path):
    """The device key lives in the store: a second process on the same store presents the
    same certificate."""
    first = device.get_device_info().certificates
    other = s.Device(sks_binary, store, stderr_path=tmp_path / "other.stderr")
    try:
        assert other.get_device_info().certificates == first
    finally:
        other.close()


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_session_on_curve(new_issuer, device, curve):
    """Session key agreement on each curve; the attestation, the key.1 attestation and the
    close attestation all verify, which proves both sides derived the same sessionKey."""
    iss = new_issuer(curve=curve)
    client_key = s.load_public_key(iss.client_ephemeral_key)
    assert client_key.curve == s.CURVES[curve].name
    key = iss.provision_key(s.KEY_EC_P256)
    assert_session_state(device, iss, True)
    assert key.handle not in device.list_keys(), "enumerateKeys lists closed sessions only"
    iss.close()
    assert_session_state(device, iss, False)
    assert device.list_keys().get(key.handle) == iss.handle
    sign_and_verify(device, key)


def test_privacy_enabled_session(new_issuer, device):
    """PEP mode: attestation is HMAC-SHA256 keyed by sessionKey, Device ID is "Anonymous"."""
    iss = new_issuer(privacy_enabled=True)
    assert iss.device_id == b"Anonymous"
    key = iss.provision_key(s.KEY_EC_P256)
    iss.close()
    sess = assert_session_state(device, iss, False)
    assert sess.privacy_enabled is True
    sign_and_verify(device, key)


@pytest.mark.parametrize("variant", ["ec-kmk", "rsa-kmk", "y2038"])
def test_session_attestation_covers_all_inputs(new_issuer, device, ec_kmk, rsa_kmk, variant):
    """The attestation is checked over every input: key management key (EC or RSA), a
    clientTime beyond 2^31, lifetime, limit and server certificate."""
    kw = dict(kmk=ec_kmk if variant == "ec-kmk" else rsa_kmk if variant == "rsa-kmk" else None,
              session_life_time=54321, session_key_limit=4321,
              client_time=0xFFFFFF00 if variant == "y2038" else 1700000000,
              server_certificate=s.CertificateAuthority("issuer TLS").der)
    iss = new_issuer(**kw)
    sess = assert_session_state(device, iss, True)
    assert sess.session_key_algorithm == s.ALG_SESSION_1
    assert sess.privacy_enabled is False
    assert sess.key_management_key == iss.kmk_spki
    assert sess.client_time == kw["client_time"]
    assert sess.session_life_time == 54321
    assert sess.server_session_id == iss.server_session_id
    assert sess.client_session_id == iss.client_session_id
    assert sess.issuer_uri == iss.issuer_uri
    assert not any(x.provisioning_handle == iss.handle for x in device.list_sessions(False))


def test_client_session_ids_are_unique(new_issuer):
    a = new_issuer()
    b = new_issuer()
    assert a.client_session_id != b.client_session_id
    assert a.handle != b.handle
    for iss in (a, b):
        raw = iss.client_session_id.encode()
        assert 1 <= len(raw) <= 32 and all(0x21 <= c <= 0x7E for c in raw)


def test_unknown_session_key_algorithm_rejected(device, ca):
    iss = s.Issuer(device, ca=ca, session_key_algorithm=s.SKS + "session.2")
    expect_error(iss.open)
    assert device.list_sessions(True) == []


@pytest.mark.parametrize("case", ["secp256k1-ephemeral", "ed25519-kmk", "empty-issuer-uri",
                                  "long-issuer-uri"])
def test_bad_session_parameters_rejected(device, ca, case):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    kw = {}
    if case == "secp256k1-ephemeral":
        kw["curve"] = "secp256k1"
    elif case == "ed25519-kmk":
        kw["kmk"] = ed25519.Ed25519PrivateKey.generate()
    elif case == "empty-issuer-uri":
        kw["issuer_uri"] = ""
    else:
        kw["issuer_uri"] = "https://issuer.example.com/" + "x" * 1000
    iss = s.Issuer(device, ca=ca, **kw)
    expect_error(iss.open)
    assert device.all_sessions() == []


def test_enumeration_of_several_sessions(new_issuer, device):
    a = new_issuer()
    b = new_issuer()
    c = new_issuer()
    c.provision_key()
    c.close()
    open_handles = [x.provisioning_handle for x in device.list_sessions(True)]
    closed_handles = [x.provisioning_handle for x in device.list_sessions(False)]
    assert sorted(open_handles) == sorted([a.handle, b.handle])
    assert closed_handles == [c.handle]


def test_abort_provisioning_session(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("123456")
    pin = iss.create_pin_policy(puk=puk)
    k1 = iss.provision_key(pin_policy=pin, pin="1357")
    k2 = iss.create_key_entry(s.KEY_EC_P384)
    other = new_issuer()
    iss.abort()
    assert_no_trace(device, iss, [k1.handle, k2.handle])
    assert_session_state(device, other, True)


def test_abort_of_closed_session_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    expect_error(iss.abort)
    assert_session_state(device, iss, False)
    sign_and_verify(device, key)


def test_closing_a_session_without_keys_removes_it(new_issuer, device):
    iss = new_issuer()
    iss.close()
    sess, _ = find_session(device, iss.handle)
    assert sess is None, "a closed session that owns no keys must be removed"


def test_session_survives_device_restart(new_issuer, device, store, sks_binary, tmp_path):
    """Sessions and keys are persistent: a provisioning session continues in a new device
    process, and the provisioned key works in a third one."""
    iss = new_issuer()
    pin = iss.create_pin_policy()
    key = iss.create_key_entry(s.KEY_EC_P256, pin_policy=pin, pin="2468")
    device.close()
    second = s.Device(sks_binary, store, stderr_path=tmp_path / "second.stderr")
    try:
        iss.device = second
        iss.set_certificate_path(key)
        iss.close()
    finally:
        second.close()
    third = s.Device(sks_binary, store, stderr_path=tmp_path / "third.stderr")
    try:
        assert third.list_keys() == {key.handle: iss.handle}
        sign_and_verify(third, key)
    finally:
        third.close()


def test_handles_are_never_reused(new_issuer, device, store, sks_binary, tmp_path):
    first = new_issuer()
    k = first.create_key_entry()
    first.abort()
    second = new_issuer()
    k2 = second.create_key_entry()
    assert second.handle != first.handle
    assert k2.handle != k.handle
    second.abort()
    device.close()
    again = s.Device(sks_binary, store, stderr_path=tmp_path / "again.stderr")
    try:
        third = s.Issuer(again, ca=first.ca).open()
        k3 = third.create_key_entry()
        assert third.handle not in (first.handle, second.handle)
        assert k3.handle not in (k.handle, k2.handle)
    finally:
        again.close()


def test_get_key_handle(new_issuer, device):
    iss = new_issuer()
    key = iss.create_key_entry(id="my-key")
    assert iss.get_key_handle("my-key") == key.handle
    iss.set_certificate_path(key)
    iss.close()


def test_get_key_handle_unknown_id_aborts(new_issuer, device):
    iss = new_issuer()
    key = iss.create_key_entry(id="my-key")
    expect_error(iss.get_key_handle, "no-such-key")
    assert_no_trace(device, iss, [key.handle])


def test_interleaved_sessions(new_issuer, device):
    """Two sessions provisioning at the same time keep separate counters and objects."""
    a = new_issuer()
    b = new_issuer(curve="P-384")
    pa = a.create_pin_policy()
    pb = b.create_pin_policy()
    ka = a.create_key_entry(pin_policy=pa, pin="1111")
    kb = b.create_key_entry(s.KEY_RSA1024, pin_policy=pb, pin="2222")
    b.set_certificate_path(kb)
    a.set_certificate_path(ka)
    b.close()
    assert device.list_keys() == {kb.handle: b.handle}
    a.close()
    assert device.list_keys() == {ka.handle: a.handle, kb.handle: b.handle}
    sign_and_verify(device, ka, pin=b"1111")
    sign_and_verify(device, kb, pin=b"2222")


# A short sessionLifeTime, and a wait that surely outlasts it. The device counts whole seconds
# (created + lifetime < now, both truncated), so a session lives between SHORT_LIFE and
# SHORT_LIFE + 1 s. With 1 s, a test whose calls on the stale session took over a second (an
# fsync stalled on a busy disk) found it expired too early; 2 s leaves room.
SHORT_LIFE = 2
PAST_SHORT_LIFE = SHORT_LIFE + 1.2


def test_expired_open_session_is_removed(new_issuer, device):
    """An open session past its sessionLifeTime (by the device's clock) is abandoned
    provisioning: the next createProvisioningSession removes it with its keys."""
    stale = new_issuer(session_life_time=SHORT_LIFE)
    key = stale.provision_key()
    fresh = new_issuer()
    assert_session_state(device, stale, True)   # not yet expired
    time.sleep(PAST_SHORT_LIFE)
    later = new_issuer()
    open_handles = [x.provisioning_handle for x in device.list_sessions(True)]
    assert stale.handle not in open_handles
    assert sorted(open_handles) == sorted([fresh.handle, later.handle])
    assert_no_trace(device, stale, [key.handle])


def test_expired_session_is_unusable_at_once(new_issuer, device):
    """The attack: keep using an open session past its sessionLifeTime, while no new session is
    created. Every call on it (session or key) is refused, and the session is removed."""
    stale = new_issuer(session_life_time=SHORT_LIFE)
    key = stale.provision_key()          # key entry with certificate, session still open
    time.sleep(PAST_SHORT_LIFE)
    with pytest.raises(s.SksError) as e:
        stale.create_key_entry()         # names the session
    assert e.value.status == s.ERROR_NO_SESSION and "expired" in e.value.message
    assert stale.handle not in [x.provisioning_handle for x in device.list_sessions(True)]
    assert_no_trace(device, stale, [key.handle])


def test_expired_session_key_calls_are_refused(new_issuer, device):
    stale = new_issuer(session_life_time=SHORT_LIFE)
    key = stale.create_key_entry()
    time.sleep(PAST_SHORT_LIFE)
    with pytest.raises(s.SksError) as e:
        stale.set_certificate_path(key)  # names the key of the expired session
    assert e.value.status == s.ERROR_NO_SESSION and "expired" in e.value.message
    assert_no_trace(device, stale, [key.handle])


def test_expired_session_cannot_be_closed(new_issuer, device):
    stale = new_issuer(session_life_time=SHORT_LIFE)
    key = stale.provision_key()
    time.sleep(PAST_SHORT_LIFE)
    with pytest.raises(s.SksError) as e:
        stale.close()
    assert e.value.status == s.ERROR_NO_SESSION
    assert device.list_keys().get(key.handle) is None


@pytest.mark.parametrize("uri", ["urn:sks:skip", "URN:SKS:SKIP"])
def test_skip_issuer_uri_is_reserved(device, ca, uri):
    """issuerUri urn:sks:skip marked a session as SKIP's, which never expires: an ordinary
    session must not be able to claim it."""
    with pytest.raises(s.SksError) as e:
        s.Issuer(device, ca=ca, issuer_uri=uri, session_life_time=1).open()
    assert e.value.status == s.ERROR_OPTION and "reserved" in e.value.message
    assert device.list_sessions(True) == []


def test_ordinary_session_claiming_skip_issuer_is_no_skip_session(new_issuer, device, store):
    """An ordinary session whose issuerUri is made urn:sks:skip by editing the store file (stores
    from before the reservation are refused whole, schema sks-1): the row no longer matches its
    MAC, so it neither passes for a SKIP request nor escapes its lifetime."""
    claimant = new_issuer(session_life_time=SHORT_LIFE)
    con = sqlite3.connect(str(store), isolation_level=None, timeout=30)
    try:
        con.execute("UPDATE sessions SET issuer_uri = 'urn:sks:skip' WHERE handle = ?", (claimant.handle,))
    finally:
        con.close()
    with pytest.raises(s.SksError) as e:
        device.call(201, s.uint(claimant.handle) + s.blob(b"a package"), "skipImport")
    assert e.value.status == s.ERROR_STORAGE and "integrity error" in e.value.message, e.value
    time.sleep(PAST_SHORT_LIFE)
    new_issuer()                         # removes expired sessions
    assert claimant.handle not in [x.provisioning_handle for x in device.list_sessions(True)]
