"""Post-provisioning: postUpdateKey, postCloneKeyProtection, postDeleteKey, postUnlockKey,
updateKeyManagementKey roll-over, privacy-mode mismatch and the other rejections. Post
operations are deferred to closeProvisioningSession, which also moves the old session's keys
to the closing session and removes the old session."""

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import sksissuer as s
from skshelpers import (assert_key_gone, assert_no_trace, expect_error, find_session,
                        protection, sha256, sign_and_verify)

DIGEST = sha256(b"post provisioning")


def provision_target(new_issuer, kmk, *, pin="2580", grouping=s.GROUPING_SHARED,
                     app_usage=s.APP_AUTHENTICATION, privacy=False, retry_limit=3,
                     key_algorithm=s.KEY_EC_P256):
    """A closed session (with a key management key) owning one PIN+PUK protected key."""
    iss = new_issuer(kmk=kmk, privacy_enabled=privacy)
    policy = None
    if pin is not None:
        puk = iss.create_puk_policy("12345678", retry_limit=5)
        policy = iss.create_pin_policy(puk=puk, grouping=grouping, retry_limit=retry_limit)
    key = iss.provision_key(key_algorithm, pin_policy=policy, pin=pin, app_usage=app_usage)
    iss.close()
    return iss, key


def assert_owned_by(device, key_handles, issuer):
    keys = device.list_keys()
    for h in key_handles:
        assert keys.get(h) == issuer.handle, \
            f"key {h} belongs to session {keys.get(h)}, expected {issuer.handle}"


def assert_session_gone(device, issuer):
    sess, _ = find_session(device, issuer.handle)
    assert sess is None, f"session {issuer.handle} should have been removed"


def assert_intact(device, target_issuer, key, pin=b"2580"):
    """A failed post operation must not touch the target key or its session."""
    sess, is_open = find_session(device, target_issuer.handle)
    assert sess is not None and is_open is False, "the target's session was damaged"
    assert device.get_key_attributes(key.handle).certificate_path == key.certificate_path
    sign_and_verify(device, key, pin=pin if key.pin_policy else b"")


def test_post_update_key(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    new = iss.provision_key(s.KEY_EC_P384, app_usage=old.app_usage)
    iss.post_update_key(new, old, kmk=ec_kmk)
    # deferred: nothing happens before close
    assert device.get_key_attributes(old.handle).certificate_path == old.certificate_path
    sign_and_verify(device, old, pin=b"2580")
    iss.close()
    attrs = device.get_key_attributes(old.handle)
    assert attrs.certificate_path == new.certificate_path, \
        "the target handle must now hold the new key"
    assert_key_gone(device, new.handle)
    sign_and_verify(device, old, s.SIG_ECDSA_SHA384, pin=b"2580", spki=new.public_key)
    expect_error(device.sign_hashed_data, old.handle, s.SIG_ECDSA_SHA256, DIGEST, b"0000",
                 codes=(s.ERROR_AUTHORIZATION,))
    info = protection(device, old)
    assert info.protection_status & s.PROTSTAT_PIN_PROTECTED, "the PIN protection is inherited"
    assert info.pin_error_count == 1
    assert_owned_by(device, [old.handle], iss)
    assert_session_gone(device, old_iss)


def test_post_update_with_clones(new_issuer, device, rsa_kmk):
    """A single postUpdateKey combined with several postCloneKeyProtection on one target."""
    old_iss, old = provision_target(new_issuer, rsa_kmk)
    iss = new_issuer(kmk=rsa_kmk)
    upd = iss.provision_key(app_usage=old.app_usage)
    c1 = iss.provision_key(s.KEY_RSA1024, app_usage=s.APP_SIGNATURE)
    c2 = iss.provision_key(app_usage=s.APP_ENCRYPTION)
    iss.post_clone_key_protection(c1, old, kmk=rsa_kmk)
    iss.post_update_key(upd, old, kmk=rsa_kmk)
    iss.post_clone_key_protection(c2, old, kmk=rsa_kmk)
    iss.close()
    assert device.get_key_attributes(old.handle).certificate_path == upd.certificate_path
    assert_key_gone(device, upd.handle)
    sign_and_verify(device, old, pin=b"2580", spki=upd.public_key)
    sign_and_verify(device, c1, pin=b"2580")
    sign_and_verify(device, c2, pin=b"2580")
    assert_owned_by(device, [old.handle, c1.handle, c2.handle], iss)
    assert_session_gone(device, old_iss)


def test_post_clone_key_protection(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    clone = iss.provision_key(s.KEY_EC_P521, app_usage=s.APP_SIGNATURE)
    iss.post_clone_key_protection(clone, old, kmk=ec_kmk)
    iss.close()
    info = protection(device, clone)
    assert info.protection_status & s.PROTSTAT_PIN_PROTECTED
    assert info.grouping == s.GROUPING_SHARED
    expect_error(device.sign_hashed_data, clone.handle, s.SIG_ECDSA_SHA256, DIGEST, b"",
                 codes=(s.ERROR_AUTHORIZATION,))
    assert protection(device, old).pin_error_count == 1, "the clone shares the PIN object"
    sign_and_verify(device, clone, pin=b"2580")
    sign_and_verify(device, old, pin=b"2580")
    device.change_pin(clone.handle, b"2580", b"1470")
    sign_and_verify(device, old, pin=b"1470")
    assert_owned_by(device, [old.handle, clone.handle], iss)
    assert_session_gone(device, old_iss)


def test_post_clone_requires_shared_grouping(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk, grouping=s.GROUPING_NONE)
    iss = new_issuer()
    clone = iss.provision_key(app_usage=s.APP_SIGNATURE)
    expect_error(iss.post_clone_key_protection, clone, old, kmk=ec_kmk)
    assert_no_trace(device, iss, [clone.handle])
    assert_intact(device, old_iss, old)


def test_post_delete_key(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    keep = iss.provision_key()
    iss.post_delete_key(old, kmk=ec_kmk)
    sign_and_verify(device, old, pin=b"2580")   # deferred to close
    iss.close()
    assert_key_gone(device, old.handle)
    assert_session_gone(device, old_iss)
    assert device.list_keys() == {keep.handle: iss.handle}


def test_post_delete_is_independent_of_delete_protection(new_issuer, device, ec_kmk):
    iss0 = new_issuer(kmk=ec_kmk)
    old = iss0.provision_key(delete_protection=s.PROTECTION_NOT_ALLOWED)
    iss0.close()
    iss = new_issuer()
    iss.post_delete_key(old, kmk=ec_kmk)
    iss.close()
    assert_key_gone(device, old.handle)


def test_post_unlock_key(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk, retry_limit=2)
    for _ in range(2):
        expect_error(device.sign_hashed_data, old.handle, s.SIG_ECDSA_SHA256, DIGEST, b"0000",
                     codes=(s.ERROR_AUTHORIZATION,))
    expect_error(device.unlock_key, old.handle, b"00000000", codes=(s.ERROR_AUTHORIZATION,))
    info = protection(device, old)
    assert info.protection_status & s.PROTSTAT_PIN_BLOCKED and info.puk_error_count == 1
    iss = new_issuer()
    iss.post_unlock_key(old, kmk=ec_kmk)
    assert protection(device, old).protection_status & s.PROTSTAT_PIN_BLOCKED, \
        "postUnlockKey is deferred to closeProvisioningSession"
    iss.close()
    info = protection(device, old)
    assert not info.protection_status & s.PROTSTAT_PIN_BLOCKED
    assert info.pin_error_count == 0
    assert info.puk_error_count == 0, "postUnlockKey clears the PUK error count too"
    sign_and_verify(device, old, pin=b"2580")
    assert_owned_by(device, [old.handle], iss)
    assert_session_gone(device, old_iss)


def test_post_unlock_of_unprotected_key_rejected(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk, pin=None)
    iss = new_issuer()
    expect_error(iss.post_unlock_key, old, kmk=ec_kmk)
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, old)


def test_key_management_key_roll_over(new_issuer, device, ec_kmk, rsa_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    new_spki = s.spki(rsa_kmk.public_key())
    # a roll-over signed by the wrong key is refused and changes nothing
    stranger = ec.generate_private_key(ec.SECP256R1())
    expect_error(device.update_key_management_key, old_iss.handle, new_spki,
                 s.roll_over_authorization(stranger, new_spki))
    sess, _ = find_session(device, old_iss.handle)
    assert sess is not None and sess.key_management_key == old_iss.kmk_spki
    assert_intact(device, old_iss, old)
    device.update_key_management_key(old_iss.handle, new_spki,
                                     s.roll_over_authorization(ec_kmk, new_spki))
    sess, is_open = find_session(device, old_iss.handle)
    assert sess.key_management_key == new_spki and is_open is False
    # the old key management key no longer authorizes anything
    iss = new_issuer()
    expect_error(iss.post_delete_key, old, kmk=ec_kmk)
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, old)
    # the new one does
    iss = new_issuer()
    iss.post_delete_key(old, kmk=rsa_kmk)
    iss.close()
    assert_key_gone(device, old.handle)


def test_key_management_key_roll_over_chain(new_issuer, device, ec_kmk, rsa_kmk):
    """RSA -> EC roll-over (the old key signs PKCS#1 v1.5), then EC -> EC."""
    old_iss, old = provision_target(new_issuer, rsa_kmk)
    for prev, nxt in ((rsa_kmk, ec_kmk), (ec_kmk, ec.generate_private_key(ec.SECP256R1()))):
        spki = s.spki(nxt.public_key())
        device.update_key_management_key(old_iss.handle, spki,
                                         s.roll_over_authorization(prev, spki))
        last = nxt
    iss = new_issuer()
    iss.post_unlock_key(old, kmk=last)
    iss.close()
    sign_and_verify(device, old, pin=b"2580")


def test_roll_over_rejections(new_issuer, device, ec_kmk):
    new = ec.generate_private_key(ec.SECP256R1())
    new_spki = s.spki(new.public_key())
    # a session without key management key is not updatable
    plain_iss, plain = provision_target(new_issuer, None)
    expect_error(device.update_key_management_key, plain_iss.handle, new_spki,
                 s.roll_over_authorization(ec_kmk, new_spki))
    assert_intact(device, plain_iss, plain)
    # open sessions cannot be updated
    open_iss = new_issuer(kmk=ec_kmk)
    expect_error(device.update_key_management_key, open_iss.handle, new_spki,
                 s.roll_over_authorization(ec_kmk, new_spki))
    # a signature over a different new key is refused
    kmk_iss, key = provision_target(new_issuer, ec_kmk)
    other = s.spki(ec.generate_private_key(ec.SECP256R1()).public_key())
    expect_error(device.update_key_management_key, kmk_iss.handle, new_spki,
                 s.roll_over_authorization(ec_kmk, other))
    sess, _ = find_session(device, kmk_iss.handle)
    assert sess.key_management_key == kmk_iss.kmk_spki
    assert_intact(device, kmk_iss, key)


@pytest.mark.parametrize("target_privacy", [False, True], ids=["e2es-target", "pep-target"])
def test_privacy_mode_mismatch_rejected(new_issuer, device, ec_kmk, target_privacy):
    old_iss, old = provision_target(new_issuer, ec_kmk, privacy=target_privacy)
    iss = new_issuer(privacy_enabled=not target_privacy)
    expect_error(iss.post_delete_key, old, kmk=ec_kmk)
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, old)
    # the same operation from a session in the same mode works
    iss = new_issuer(privacy_enabled=target_privacy)
    iss.post_delete_key(old, kmk=ec_kmk)
    iss.close()
    assert_key_gone(device, old.handle)


def test_wrong_key_management_key_rejected(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    new = iss.provision_key(app_usage=old.app_usage)
    expect_error(iss.post_update_key, new, old, kmk=ec.generate_private_key(ec.SECP256R1()))
    assert_no_trace(device, iss, [new.handle])
    assert_intact(device, old_iss, old)


def test_authorization_for_another_certificate_rejected(new_issuer, device, ec_kmk):
    """The signed Target Key Reference covers the target's end-entity certificate."""
    old_iss = new_issuer(kmk=ec_kmk)
    a = old_iss.provision_key()
    b = old_iss.provision_key()
    old_iss.close()
    iss = new_issuer()
    expect_error(iss.post_delete_key, a, authorization=iss.target_authorization(
        b.ee_certificate, ec_kmk))
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, a)


def test_authorization_from_another_session_rejected(new_issuer, device, ec_kmk):
    """The signed Target Key Reference covers the current sessionKey: it cannot be
    replayed in another session."""
    old_iss, old = provision_target(new_issuer, ec_kmk)
    first = new_issuer()
    stolen = first.target_authorization(old.ee_certificate, ec_kmk)
    iss = new_issuer()
    expect_error(iss.post_delete_key, old, authorization=stolen)
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, old)


def test_target_without_key_management_key_rejected(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, None)
    iss = new_issuer()
    expect_error(iss.post_delete_key, old, kmk=ec_kmk)
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, old)


def test_target_in_open_session_rejected(new_issuer, device, ec_kmk):
    target_iss = new_issuer(kmk=ec_kmk)
    target = target_iss.provision_key()
    iss = new_issuer()
    expect_error(iss.post_delete_key, target, kmk=ec_kmk)
    assert_no_trace(device, iss)
    target_iss.close()


def test_delete_must_be_exclusive(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    iss.post_unlock_key(old, kmk=ec_kmk)
    expect_error(iss.post_delete_key, old, kmk=ec_kmk)
    assert_no_trace(device, iss)
    assert_intact(device, old_iss, old)


def test_single_update_per_target(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    n1 = iss.provision_key(app_usage=old.app_usage)
    n2 = iss.provision_key(app_usage=old.app_usage)
    iss.post_update_key(n1, old, kmk=ec_kmk)
    expect_error(iss.post_update_key, n2, old, kmk=ec_kmk)
    assert_no_trace(device, iss, [n1.handle, n2.handle])
    assert_intact(device, old_iss, old)


def test_update_requires_same_app_usage(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk, app_usage=s.APP_AUTHENTICATION)
    iss = new_issuer()
    new = iss.provision_key(app_usage=s.APP_SIGNATURE)
    expect_error(iss.post_update_key, new, old, kmk=ec_kmk)
    assert_no_trace(device, iss, [new.handle])
    assert_intact(device, old_iss, old)


@pytest.mark.parametrize("op", ["update", "clone"])
def test_new_key_must_not_have_pin(new_issuer, device, ec_kmk, op):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    policy = iss.create_pin_policy()
    new = iss.provision_key(pin_policy=policy, pin="1470", app_usage=old.app_usage)
    fn = iss.post_update_key if op == "update" else iss.post_clone_key_protection
    expect_error(fn, new, old, kmk=ec_kmk)
    assert_no_trace(device, iss, [new.handle])
    assert_intact(device, old_iss, old)


def test_new_key_needs_certificate(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    new = iss.create_key_entry(app_usage=old.app_usage)
    new.certificate_path = [b"\x30\x00"]     # MAC over a certificate the device never got
    expect_error(iss.post_update_key, new, old, kmk=ec_kmk)
    assert_no_trace(device, iss, [new.handle])
    assert_intact(device, old_iss, old)


def test_post_operation_on_vanished_target_fails_at_close(new_issuer, device, ec_kmk):
    """Two open sessions delete the same key: the first close wins; the second session's
    post operation can no longer succeed, so its close must fail and leave no trace."""
    old_iss, old = provision_target(new_issuer, ec_kmk)
    first = new_issuer()
    second = new_issuer()
    first.post_delete_key(old, kmk=ec_kmk)
    second.post_delete_key(old, kmk=ec_kmk)
    first.close()
    assert_key_gone(device, old.handle)
    expect_error(second.close)
    assert_no_trace(device, second)


def test_update_of_key_deleted_meanwhile_fails_at_close(new_issuer, device, ec_kmk):
    """postUpdateKey whose target is deleted (deleteKey) before the close: the update cannot
    be committed, so the close fails and the new key does not survive as a plain key."""
    old_iss, old = provision_target(new_issuer, ec_kmk, pin=None)
    iss = new_issuer()
    new = iss.provision_key(app_usage=old.app_usage)
    iss.post_update_key(new, old, kmk=ec_kmk)
    device.delete_key(old.handle)
    expect_error(iss.close)
    assert_no_trace(device, iss, [new.handle])


def test_post_update_replaces_all_key_data(new_issuer, device, ec_kmk):
    """An update replaces everything of the key entry (certificate path, key material,
    symmetric key, extensions, friendly name, endorsed algorithms) except PIN protection."""
    old_iss = new_issuer(kmk=ec_kmk)
    policy = old_iss.create_pin_policy()
    old = old_iss.provision_key(pin_policy=policy, pin="2580", friendly_name="old",
                                endorsed_algorithms=[s.HMAC_SHA256])
    old_iss.import_symmetric_key(old, b"\x01" * 32)
    old_iss.add_extension(old, "http://example.com/old", s.SUB_TYPE_EXTENSION, b"old")
    old_iss.close()
    iss = new_issuer()
    new = iss.provision_key(s.KEY_EC_P384, friendly_name="new",
                            endorsed_algorithms=[s.SIG_ECDSA_SHA384])
    iss.add_extension(new, "http://example.com/new", s.SUB_TYPE_EXTENSION, b"new")
    iss.post_update_key(new, old, kmk=ec_kmk)
    iss.close()
    attrs = device.get_key_attributes(old.handle)
    assert attrs.symmetric_key_length == 0
    assert attrs.certificate_path == new.certificate_path
    assert attrs.friendly_name == "new"
    assert attrs.endorsed_algorithms == [s.SIG_ECDSA_SHA384]
    assert attrs.extension_types == ["http://example.com/new"]
    assert device.get_extension(old.handle, "http://example.com/new").extension_data == b"new"
    expect_error(device.get_extension, old.handle, "http://example.com/old",
                 codes=(s.ERROR_OPTION,))
    expect_error(device.perform_hmac, old.handle, s.HMAC_SHA256, b"x", authorization=b"2580")
    sign_and_verify(device, old, s.SIG_ECDSA_SHA384, pin=b"2580", spki=new.public_key)


def test_clone_keeps_pin_after_target_deleted(new_issuer, device, ec_kmk):
    old_iss, old = provision_target(new_issuer, ec_kmk)
    iss = new_issuer()
    clone = iss.provision_key()
    iss.post_clone_key_protection(clone, old, kmk=ec_kmk)
    iss.close()
    device.delete_key(old.handle)
    info = protection(device, clone)
    assert info.protection_status == s.PROTSTAT_PIN_PROTECTED | s.PROTSTAT_PUK_PROTECTED
    expect_error(device.sign_hashed_data, clone.handle, s.SIG_ECDSA_SHA256, DIGEST, b"",
                 codes=(s.ERROR_AUTHORIZATION,))
    sign_and_verify(device, clone, pin=b"2580")
    device.unlock_key(clone.handle, b"12345678")


def test_post_operation_adopts_all_keys_of_the_old_session(new_issuer, device, ec_kmk):
    """All keys of a session touched by a post operation move to the closing session, and
    from then on that session's key management key (not the old one) governs them."""
    old_iss = new_issuer(kmk=ec_kmk)
    a = old_iss.provision_key()
    b = old_iss.provision_key()
    old_iss.close()
    kmk2 = ec.generate_private_key(ec.SECP256R1())
    iss = new_issuer(kmk=kmk2)
    iss.post_delete_key(a, kmk=ec_kmk)
    iss.close()
    assert device.list_keys() == {b.handle: iss.handle}
    assert_session_gone(device, old_iss)
    sess, is_open = find_session(device, iss.handle)
    assert sess.key_management_key == iss.kmk_spki and is_open is False
    stale = new_issuer()
    expect_error(stale.post_delete_key, b, kmk=ec_kmk)
    assert_no_trace(device, stale)
    assert device.list_keys() == {b.handle: iss.handle}
    fresh = new_issuer()
    fresh.post_delete_key(b, kmk=kmk2)
    fresh.close()
    assert device.list_keys() == {}
    assert device.all_sessions() == []
