"""Failure paths: a bad MAC on any method, replayed or skipped sequence counters, calls in the
wrong order, exhausted sessionKeyLimit. Each must abort the session and leave no trace of
it, and must roll back deferred post-provisioning operations."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import sksissuer as s
from skshelpers import assert_no_trace, expect_error, find_session, sign_and_verify


class Stop(Exception):
    pass


class Stepper:
    """Runs named provisioning steps; the step named `bad` is sent with a corrupted MAC and
    must fail with ERROR_MAC."""

    def __init__(self, iss, bad):
        self.iss = iss
        self.bad = bad
        self.error = None

    def __call__(self, name, fn, *a, **kw):
        if name != self.bad:
            return fn(*a, **kw)
        self.iss.corrupt_next_mac = True
        self.error = expect_error(fn, *a, codes=(s.ERROR_MAC,), **kw)
        raise Stop()


def prior_session(new_issuer, kmk):
    """A closed, updatable session with targets for every post operation."""
    iss = new_issuer(kmk=kmk)
    puk = iss.create_puk_policy("12345678")
    shared = iss.create_pin_policy(puk=puk, grouping=s.GROUPING_SHARED)
    t_upd = iss.provision_key(pin_policy=shared, pin="2580", app_usage=s.APP_AUTHENTICATION)
    t_del = iss.provision_key(pin_policy=shared, pin="2580")
    t_unl = iss.provision_key(pin_policy=shared, pin="2580")
    iss.close()
    return iss, t_upd, t_del, t_unl


BAD_MAC_STEPS = [s.M_CREATE_PUK_POLICY, s.M_CREATE_PIN_POLICY, s.M_CREATE_KEY_ENTRY,
                 s.M_SET_CERTIFICATE_PATH, s.M_IMPORT_SYMMETRIC_KEY, s.M_IMPORT_PRIVATE_KEY,
                 s.M_ADD_EXTENSION, s.M_POST_UPDATE_KEY, s.M_POST_CLONE_KEY_PROTECTION,
                 s.M_POST_DELETE_KEY, s.M_POST_UNLOCK_KEY, s.M_CLOSE_PROVISIONING_SESSION]


@pytest.mark.parametrize("bad", BAD_MAC_STEPS)
def test_bad_mac(new_issuer, device, ec_kmk, bad):
    prior, t_upd, t_del, t_unl = prior_session(new_issuer, ec_kmk)
    iss = new_issuer()
    step = Stepper(iss, bad)
    try:
        puk = step(s.M_CREATE_PUK_POLICY, iss.create_puk_policy, "87654321")
        pin = step(s.M_CREATE_PIN_POLICY, iss.create_pin_policy, puk=puk)
        k1 = step(s.M_CREATE_KEY_ENTRY, iss.create_key_entry, pin_policy=pin, pin="1470")
        step(s.M_SET_CERTIFICATE_PATH, iss.set_certificate_path, k1)
        k2 = iss.provision_key()
        step(s.M_IMPORT_SYMMETRIC_KEY, iss.import_symmetric_key, k2, b"\x33" * 32)
        imported = ec.generate_private_key(ec.SECP256R1())
        k3 = iss.create_key_entry()
        iss.set_certificate_path(k3, certify=s.spki(imported.public_key()))
        step(s.M_IMPORT_PRIVATE_KEY, iss.import_private_key, k3, imported)
        step(s.M_ADD_EXTENSION, iss.add_extension, k1, "http://example.com/x",
             s.SUB_TYPE_EXTENSION, b"data")
        upd = iss.provision_key(app_usage=t_upd.app_usage)
        step(s.M_POST_UPDATE_KEY, iss.post_update_key, upd, t_upd, kmk=ec_kmk)
        clone = iss.provision_key()
        step(s.M_POST_CLONE_KEY_PROTECTION, iss.post_clone_key_protection, clone, t_upd,
             kmk=ec_kmk)
        step(s.M_POST_DELETE_KEY, iss.post_delete_key, t_del, kmk=ec_kmk)
        step(s.M_POST_UNLOCK_KEY, iss.post_unlock_key, t_unl, kmk=ec_kmk)
        step(s.M_CLOSE_PROVISIONING_SESSION, iss.close)
        raise AssertionError(f"step {bad} never ran")
    except Stop:
        pass
    assert_no_trace(device, iss)
    # the deferred post operations are rolled back / never happen
    sess, is_open = find_session(device, prior.handle)
    assert sess is not None and is_open is False
    keys = device.list_keys()
    for t in (t_upd, t_del, t_unl):
        assert keys.get(t.handle) == prior.handle
        assert device.get_key_attributes(t.handle).certificate_path == t.certificate_path
    sign_and_verify(device, t_upd, pin=b"2580")


def test_mac_method_name_is_case_sensitive(new_issuer, device):
    iss = new_issuer()
    good = iss.create_key_entry()
    data = s.create_pin_policy_mac_data("PIN.x", "", True, True, 0, 3, 0, 0, 4, 8, 0)
    mac = s.method_mac(iss.session_key, "createPinPolicy", iss.counter, data)
    expect_error(device.create_pin_policy, iss.handle, "PIN.x", 0, True, True, 0, 3, 0, 0, 4,
                 8, 0, mac, codes=(s.ERROR_MAC,))
    assert_no_trace(device, iss, [good.handle])


def test_reused_counter(new_issuer, device):
    iss = new_issuer()
    k1 = iss.provision_key()
    iss.counter -= 1
    expect_error(iss.create_key_entry, codes=(s.ERROR_MAC,))
    assert_no_trace(device, iss, [k1.handle])


def test_skipped_counter(new_issuer, device):
    iss = new_issuer()
    k1 = iss.provision_key()
    iss.counter += 1
    expect_error(iss.create_key_entry, codes=(s.ERROR_MAC,))
    assert_no_trace(device, iss, [k1.handle])


def test_replayed_request(new_issuer, device):
    """Sending an accepted request again (same bytes, same MAC) is refused."""
    iss = new_issuer()
    k1 = iss.create_key_entry()
    iss.set_certificate_path(k1)
    iss.add_extension(k1, "http://example.com/a", s.SUB_TYPE_EXTENSION, b"once")
    raw = device.last_request
    reply = device.transact(raw)
    assert reply[0] != s.OK, "a replayed addExtension was accepted"
    assert_no_trace(device, iss, [k1.handle])


def test_replayed_create_key_entry(new_issuer, device):
    iss = new_issuer()
    iss.create_key_entry(id="K")
    raw = device.last_request
    reply = device.transact(raw)
    assert reply[0] != s.OK, "a replayed createKeyEntry was accepted"
    assert_no_trace(device, iss)


def test_mac_from_another_session(new_issuer, device):
    a = new_issuer()
    b = new_issuer()
    key = a.create_key_entry()
    b.counter = a.counter
    b.keys[key.id] = key
    # b computes the MAC with its own session key for a's key
    expect_error(b.set_certificate_path, key, codes=(s.ERROR_MAC,))
    assert_no_trace(device, a, [key.handle])
    sess, is_open = find_session(device, b.handle)
    assert sess is not None and is_open, "the session not named by the call is unaffected"


# ---------------------------------------------------------------------------------------------
# Wrong order
# ---------------------------------------------------------------------------------------------

def test_close_before_set_certificate_path(new_issuer, device):
    iss = new_issuer()
    k1 = iss.provision_key()
    k2 = iss.create_key_entry()
    expect_error(iss.close)
    assert_no_trace(device, iss, [k1.handle, k2.handle])


@pytest.mark.parametrize("length,ok", [(0, False), (1, True), (32, True), (33, False)])
def test_close_nonce_length(new_issuer, device, length, ok):
    iss = new_issuer()
    key = iss.provision_key()
    if ok:
        iss.close(nonce=b"\x5a" * length)
        sign_and_verify(device, key)
    else:
        expect_error(iss.close, nonce=b"\x5a" * length)
        assert_no_trace(device, iss, [key.handle])


@pytest.mark.parametrize("case", ["secp256k1-cert", "garbage-cert", "empty-path"])
def test_bad_certificate_path_aborts(new_issuer, device, case):
    iss = new_issuer()
    key = iss.create_key_entry()
    if case == "secp256k1-cert":
        other = s.spki(ec.generate_private_key(ec.SECP256K1()).public_key())
        path = [iss.ca.issue(other, "k1"), iss.ca.der]
    elif case == "garbage-cert":
        path = [b"\x30\x03\x02\x01\x00"]
    else:
        path = []
    expect_error(iss.set_certificate_path, key, path)
    assert_no_trace(device, iss, [key.handle])


def test_import_of_unsupported_private_key_aborts(new_issuer, device):
    priv = ec.generate_private_key(ec.SECP256K1())
    iss = new_issuer()
    key = iss.create_key_entry()
    path = [iss.ca.issue(s.spki(ec.generate_private_key(ec.SECP256R1()).public_key()), "x")]
    iss.set_certificate_path(key, path)
    expect_error(iss.import_private_key, key, priv)
    assert_no_trace(device, iss, [key.handle])


def test_set_certificate_path_twice(new_issuer, device):
    iss = new_issuer()
    k1 = iss.provision_key()
    expect_error(iss.set_certificate_path, k1)
    assert_no_trace(device, iss, [k1.handle])


@pytest.mark.parametrize("op", ["importSymmetricKey", "importPrivateKey", "addExtension"])
def test_key_data_before_certificate(new_issuer, device, op):
    iss = new_issuer()
    key = iss.create_key_entry()
    key.certificate_path = [iss.ca.issue(key.public_key, "never set")]
    if op == "importSymmetricKey":
        fn = lambda: iss.import_symmetric_key(key, b"\x01" * 16)   # noqa: E731
    elif op == "importPrivateKey":
        fn = lambda: iss.import_private_key(key, ec.generate_private_key(ec.SECP256R1()))  # noqa
    else:
        fn = lambda: iss.add_extension(key, "http://x", s.SUB_TYPE_EXTENSION, b"x")  # noqa
    expect_error(fn)
    assert_no_trace(device, iss, [key.handle])


def test_set_certificate_path_on_key_of_another_open_session(new_issuer, device):
    a = new_issuer()
    b = new_issuer()
    key = a.create_key_entry()
    # b tries to certify a's key: the call names a's key, so a's session is the one aborted
    expect_error(b.set_certificate_path, key)
    assert_no_trace(device, a, [key.handle])
    sess, is_open = find_session(device, b.handle)
    assert sess is not None and is_open


def test_set_certificate_path_on_key_of_closed_session(new_issuer, device):
    a = new_issuer()
    key = a.provision_key()
    a.close()
    b = new_issuer()
    expect_error(b.set_certificate_path, key)
    assert device.get_key_attributes(key.handle).certificate_path == key.certificate_path
    assert device.list_keys() == {key.handle: a.handle}
    sign_and_verify(device, key)


def test_provisioning_on_closed_session_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    expect_error(iss.create_key_entry)
    expect_error(iss.create_pin_policy)
    expect_error(iss.close)
    sess, is_open = find_session(device, iss.handle)
    assert sess is not None and is_open is False, "a closed session must survive the attempts"
    sign_and_verify(device, key)


@pytest.mark.parametrize("what", ["puk", "pin"])
def test_unreferenced_policy_at_close(new_issuer, device, what):
    iss = new_issuer()
    key = iss.provision_key()
    puk = iss.create_puk_policy("12345678")
    if what == "pin":
        iss.create_pin_policy(puk=puk)
    expect_error(iss.close)
    assert_no_trace(device, iss, [key.handle])


def import_with_certificate(iss, private_key, path=None):
    """A key entry holding an imported private key; returns the key (path reused if given)."""
    key = iss.create_key_entry()
    if path is None:
        iss.set_certificate_path(key, certify=s.spki(private_key.public_key()))
    else:
        iss.set_certificate_path(key, path)
        key.certified_key = s.spki(private_key.public_key())
    iss.import_private_key(key, private_key)
    return key


def test_duplicate_end_entity_certificate_in_session(new_issuer, device):
    """Two keys with the same end-entity certificate (and matching private keys, so only
    the duplicate rule can object)."""
    priv = ec.generate_private_key(ec.SECP256R1())
    iss = new_issuer()
    k1 = import_with_certificate(iss, priv)
    k2 = import_with_certificate(iss, priv, k1.certificate_path)
    expect_error(iss.close)
    assert_no_trace(device, iss, [k1.handle, k2.handle])


def test_duplicate_end_entity_certificate_across_sessions(new_issuer, device):
    priv = ec.generate_private_key(ec.SECP256R1())
    a = new_issuer()
    k1 = import_with_certificate(a, priv)
    a.close()
    b = new_issuer()
    k2 = import_with_certificate(b, priv, k1.certificate_path)
    expect_error(b.close)
    assert_no_trace(device, b, [k2.handle])
    sign_and_verify(device, k1)


@pytest.mark.parametrize("op", ["delete", "update"])
def test_duplicate_certificate_allowed_when_target_is_replaced(new_issuer, device, ec_kmk, op):
    """The same end-entity certificate may come back in a session that deletes or updates
    the key currently holding it."""
    priv = ec.generate_private_key(ec.SECP256R1())
    a = new_issuer(kmk=ec_kmk)
    old = import_with_certificate(a, priv)
    a.close()
    b = new_issuer()
    new = import_with_certificate(b, priv, old.certificate_path)
    if op == "delete":
        b.post_delete_key(old, kmk=ec_kmk)
    else:
        b.post_update_key(new, old, kmk=ec_kmk)
    b.close()
    handle = new.handle if op == "delete" else old.handle
    assert device.list_keys() == {handle: b.handle}
    assert device.get_key_attributes(handle).certificate_path == old.certificate_path
    sign_and_verify(device, new if op == "delete" else old)


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 33, "tab\t", "é"],
                         ids=["empty", "space", "33chars", "tab", "non-ascii"])
def test_bad_object_ids(new_issuer, device, bad_id):
    iss = new_issuer()
    good = iss.create_key_entry(id="x" * 32)
    expect_error(iss.create_key_entry, id=bad_id)
    assert_no_trace(device, iss, [good.handle])


@pytest.mark.parametrize("first", ["puk", "pin", "key"])
def test_object_ids_share_one_namespace(new_issuer, device, first):
    iss = new_issuer()
    if first == "puk":
        iss.create_puk_policy("12345678", id="Same")
    elif first == "pin":
        iss.create_pin_policy(id="Same")
    else:
        iss.create_key_entry(id="Same")
    expect_error(iss.create_key_entry, id="Same")
    assert_no_trace(device, iss)


def test_unknown_pin_policy_handle(new_issuer, device):
    iss = new_issuer()
    forged = s.PinPolicy(0x7FFF0000, "PIN.0", None, True, True, 0, 3, 0, 0, 4, 8, 0)
    expect_error(iss.create_key_entry, pin_policy=forged, pin="1357")
    assert_no_trace(device, iss)


def test_unknown_puk_policy_handle(new_issuer, device):
    iss = new_issuer()
    forged = s.PukPolicy(0x7FFF0000, "PUK.0", b"1234", 0, 3)
    expect_error(iss.create_pin_policy, puk=forged)
    assert_no_trace(device, iss)


def test_bad_session_handle(device):
    expect_error(device.close_provisioning_session, 0x7FFF0000, b"\x01" * 32, b"\x00" * 32,
                 codes=(s.ERROR_NO_SESSION,))
    expect_error(device.abort_provisioning_session, 0x7FFF0000, codes=(s.ERROR_NO_SESSION,))


def test_malformed_requests(device, new_issuer):
    """Wire-level garbage gets an error reply (never a crash) and does not affect an open
    session that is not named by it."""
    iss = new_issuer()
    for raw in (b"", b"\xff", b"\x01\x00", bytes([2]) + b"\x00", bytes([100, 0, 0]),
                bytes([4]) + s.uint(0) + b"\x02"):
        reply = device.transact(raw)
        assert reply and reply[0] != s.OK, f"request {raw.hex()} accepted"
        r = s.Reader(reply[1:])
        r.string()
        r.end()
    iss.provision_key()
    iss.close()


def test_malformed_provisioning_request_aborts_named_session(new_issuer, device):
    """A provisioning call that names an open session but cannot be decoded (here a bool
    byte 0x02) is an incorrect operation of that session: the session is terminated."""
    iss = new_issuer()
    key = iss.create_key_entry()
    mac = iss.mac(s.M_CREATE_PIN_POLICY, s.create_pin_policy_mac_data(
        "PIN.x", "", True, True, 0, 3, 0, 0, 4, 8, 0))
    raw = (bytes([9]) + s.uint(iss.handle) + s.string("PIN.x") + s.uint(0) + b"\x02\x01"
           + s.byte(0) + s.ushort(3) + s.byte(0) + s.byte(0) + s.ushort(4) + s.ushort(8)
           + s.byte(0) + s.arr(mac))
    reply = device.transact(raw)
    assert reply[0] != s.OK
    assert_no_trace(device, iss, [key.handle])


# ---------------------------------------------------------------------------------------------
# sessionKeyLimit: every MAC check, attestation, EncryptionKey use and target authorization
# HMAC counts (conformance README); the KDF and the session attestation do not.
# ---------------------------------------------------------------------------------------------

def scenario_plain(iss, ctx):
    iss.provision_key()                      # MAC + attestation, MAC
    iss.close()                              # MAC + attestation


def scenario_symmetric(iss, ctx):
    key = iss.provision_key()                # 3
    iss.import_symmetric_key(key, b"\x44" * 32)   # MAC + decryption
    iss.close()                              # 2


def scenario_protected(iss, ctx):
    puk = iss.create_puk_policy("12345678")  # MAC + decryption
    pin = iss.create_pin_policy(puk=puk, user_defined=False)   # MAC
    iss.provision_key(pin_policy=pin, pin="2580")   # MAC + decryption + attestation, MAC
    iss.close()                              # 2


def scenario_post_delete(iss, ctx):
    iss.post_delete_key(ctx["target"], kmk=ctx["kmk"])   # MAC + target reference HMAC
    iss.close()                              # 2


SCENARIOS = [(scenario_plain, 5), (scenario_symmetric, 7), (scenario_protected, 9),
             (scenario_post_delete, 4)]


@pytest.mark.parametrize("scenario,needed", SCENARIOS,
                         ids=["plain", "symmetric", "protected", "post-delete"])
@pytest.mark.parametrize("enough", [True, False], ids=["exact", "one-short"])
def test_session_key_limit(new_issuer, device, ec_kmk, scenario, needed, enough):
    ctx = {"kmk": ec_kmk}
    if scenario is scenario_post_delete:
        t_iss = new_issuer(kmk=ec_kmk)
        ctx["target"] = t_iss.provision_key()
        t_iss.close()
    iss = new_issuer(session_key_limit=needed if enough else needed - 1)
    if enough:
        scenario(iss, ctx)
        if scenario is scenario_post_delete:
            expect_error(device.get_key_attributes, ctx["target"].handle,
                         codes=(s.ERROR_NO_KEY,))
        return
    expect_error(scenario, iss, ctx)
    assert_no_trace(device, iss)
    if scenario is scenario_post_delete:
        sign_and_verify(device, ctx["target"])


@pytest.mark.parametrize("limit,ok", [(5, True), (4, False)])
def test_session_key_limit_privacy_mode(new_issuer, device, limit, ok):
    """In privacy mode the session attestation is an HMAC with sessionKey, but like the KDF
    it does not count against sessionKeyLimit."""
    iss = new_issuer(privacy_enabled=True, session_key_limit=limit)
    if ok:
        scenario_plain(iss, {})
    else:
        expect_error(scenario_plain, iss, {})
        assert_no_trace(device, iss)
