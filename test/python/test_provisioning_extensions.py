"""Extensions of all four sub-types, property bags with setProperty, and the contents of
getKeyAttributes and getKeyProtectionInfo."""

import os

import pytest

import sksissuer as s
from skshelpers import assert_no_trace, expect_error, protection

T_EXT = "http://example.com/sks/ext"
T_ENC = "http://example.com/sks/encrypted"
T_BAG = "urn:ietf:rfc:4226"
T_LOGO = "https://webpki.github.io/keygen2/logotype#application"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + os.urandom(40)
BAG = [("Counter", "0", True), ("Digits", "8", False), ("Label", "näme", True)]


def key_with_extensions(new_issuer):
    iss = new_issuer()
    key = iss.provision_key(friendly_name="Extended key")
    iss.add_extension(key, T_EXT, s.SUB_TYPE_EXTENSION, b"plain extension data")
    iss.add_extension(key, T_ENC, s.SUB_TYPE_ENCRYPTED_EXTENSION, b"secret extension data")
    iss.add_property_bag(key, T_BAG, BAG)
    iss.add_extension(key, T_LOGO, s.SUB_TYPE_LOGOTYPE, PNG, qualifier="image/png")
    iss.close()
    return key


def test_extensions_of_all_sub_types(new_issuer, device):
    key = key_with_extensions(new_issuer)
    ext = device.get_extension(key.handle, T_EXT)
    assert (ext.sub_type, ext.qualifier, ext.extension_data) == \
        (s.SUB_TYPE_EXTENSION, "", b"plain extension data")
    ext = device.get_extension(key.handle, T_ENC)
    assert (ext.sub_type, ext.qualifier, ext.extension_data) == \
        (s.SUB_TYPE_ENCRYPTED_EXTENSION, "", b"secret extension data"), \
        "encrypted extensions are decrypted during provisioning"
    ext = device.get_extension(key.handle, T_BAG)
    assert (ext.sub_type, ext.qualifier, ext.extension_data) == \
        (s.SUB_TYPE_PROPERTY_BAG, "", s.property_bag(BAG))
    ext = device.get_extension(key.handle, T_LOGO)
    assert (ext.sub_type, ext.qualifier, ext.extension_data) == \
        (s.SUB_TYPE_LOGOTYPE, "image/png", PNG)
    attrs = device.get_key_attributes(key.handle)
    assert sorted(attrs.extension_types) == sorted([T_EXT, T_ENC, T_BAG, T_LOGO])
    expect_error(device.get_extension, key.handle, "http://example.com/none",
                 codes=(s.ERROR_OPTION,))


def test_set_property(new_issuer, device):
    key = key_with_extensions(new_issuer)
    device.set_property(key.handle, T_BAG, "Counter", "12345")
    device.set_property(key.handle, T_BAG, "Label", "")
    want = [("Counter", "12345", True), ("Digits", "8", False), ("Label", "", True)]
    assert device.get_extension(key.handle, T_BAG).extension_data == s.property_bag(want)
    device.set_property(key.handle, T_BAG, "Label", "ünïcode")
    want[2] = ("Label", "ünïcode", True)
    ext = device.get_extension(key.handle, T_BAG)
    assert s.parse_property_bag(ext.extension_data) == want
    # not writable, unknown name, not a property bag, unknown type
    expect_error(device.set_property, key.handle, T_BAG, "Digits", "6")
    expect_error(device.set_property, key.handle, T_BAG, "NoSuchName", "6")
    expect_error(device.set_property, key.handle, T_BAG, "counter", "6")
    expect_error(device.set_property, key.handle, T_EXT, "Counter", "6")
    expect_error(device.set_property, key.handle, "http://example.com/none", "Counter", "6")
    assert s.parse_property_bag(device.get_extension(key.handle, T_BAG).extension_data) == want


def test_large_extension(new_issuer, device):
    size = device.device_info().extension_data_size
    data = os.urandom(min(size, 65536))
    iss = new_issuer()
    key = iss.provision_key()
    iss.add_extension(key, T_EXT, s.SUB_TYPE_EXTENSION, data)
    iss.add_extension(key, T_ENC, s.SUB_TYPE_ENCRYPTED_EXTENSION, data)
    iss.close()
    assert device.get_extension(key.handle, T_EXT).extension_data == data
    assert device.get_extension(key.handle, T_ENC).extension_data == data


def test_extension_too_large_aborts(new_issuer, device):
    size = device.device_info().extension_data_size
    iss = new_issuer()
    key = iss.provision_key()
    expect_error(iss.add_extension, key, T_EXT, s.SUB_TYPE_EXTENSION, b"\x00" * (size + 1))
    assert_no_trace(device, iss, [key.handle])


@pytest.mark.parametrize("type_,sub_type,data,qualifier", [
    (T_EXT, s.SUB_TYPE_EXTENSION, b"again", ""),                  # duplicate type
    (T_LOGO + "2", s.SUB_TYPE_LOGOTYPE, PNG, ""),                 # logotype without MIME type
    (T_EXT + "2", s.SUB_TYPE_EXTENSION, b"x", "text/plain"),      # qualifier on plain ext
    (T_BAG + "2", s.SUB_TYPE_PROPERTY_BAG, b"\x00\x00\x00\x00\x01x", ""),   # empty name
    (T_BAG + "3", s.SUB_TYPE_PROPERTY_BAG, b"\x00\x01a\x02\x00\x01x", ""),  # writable = 2
    (T_BAG + "4", s.SUB_TYPE_PROPERTY_BAG, b"\x00\x01a\x00\x00\x05x", ""),  # truncated value
    (T_BAG + "5", s.SUB_TYPE_PROPERTY_BAG, b"", ""),              # no properties
    (T_EXT + "3", 4, b"x", ""),                                   # unknown sub-type
    ("", s.SUB_TYPE_EXTENSION, b"x", ""),                         # empty type
    (T_LOGO + "3", s.SUB_TYPE_LOGOTYPE, PNG, "x" * 129),          # qualifier > 128 bytes
], ids=["duplicate", "logo-no-qualifier", "ext-qualifier", "bag-empty-name",
        "bag-writable-2", "bag-truncated", "bag-empty", "subtype-4", "empty-type",
        "long-qualifier"])
def test_bad_extensions_abort(new_issuer, device, type_, sub_type, data, qualifier):
    iss = new_issuer()
    key = iss.provision_key()
    iss.add_extension(key, T_EXT, s.SUB_TYPE_EXTENSION, b"first")
    expect_error(iss.add_extension, key, type_, sub_type, data, qualifier=qualifier)
    assert_no_trace(device, iss, [key.handle])


def test_extension_on_key_of_closed_session_rejected(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    other = new_issuer()
    expect_error(other.add_extension, key, T_EXT, s.SUB_TYPE_EXTENSION, b"late")
    assert device.get_key_attributes(key.handle).extension_types == []


# ---------------------------------------------------------------------------------------------
# getKeyAttributes / getKeyProtectionInfo
# ---------------------------------------------------------------------------------------------

def test_key_attributes(new_issuer, device):
    iss = new_issuer()
    endorsed = sorted([s.SIG_ECDSA_SHA256, s.SIG_ECDSA_SHA512, s.KA_ECDH_RAW])
    key = iss.create_key_entry(s.KEY_EC_P384, app_usage=s.APP_ENCRYPTION,
                               friendly_name="Fränzi's key ✓", endorsed_algorithms=endorsed)
    extra_ca = s.CertificateAuthority("intermediate").der
    path = [iss.ca.issue(key.public_key, "ee"), extra_ca, iss.ca.der]
    iss.set_certificate_path(key, path)
    iss.close()
    attrs = device.get_key_attributes(key.handle)
    assert attrs.symmetric_key_length == 0
    assert attrs.certificate_path == path
    assert attrs.app_usage == s.APP_ENCRYPTION
    assert attrs.friendly_name == "Fränzi's key ✓"
    assert attrs.endorsed_algorithms == endorsed
    assert attrs.extension_types == []


def test_protection_info_without_pin(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key(delete_protection=s.PROTECTION_NOT_ALLOWED,
                            export_protection=s.PROTECTION_NONE)
    iss.close()
    info = protection(device, key)
    assert info == s.KeyProtectionInfo(
        protection_status=0, puk_format=0, puk_retry_limit=0, puk_error_count=0,
        user_defined=False, user_modifiable=False, format=0, retry_limit=0, grouping=0,
        pattern_restrictions=0, min_length=0, max_length=0, input_method=0, pin_error_count=0,
        enable_pin_caching=False, biometric_protection=0, export_protection=0,
        delete_protection=s.PROTECTION_NOT_ALLOWED, key_backup=0)


def test_protection_info_with_pin_and_puk(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("AB12CD", format=s.FORMAT_ALPHANUMERIC, retry_limit=7)
    policy = iss.create_pin_policy(puk=puk, user_defined=True, user_modifiable=False,
                                   format=s.FORMAT_STRING, retry_limit=9,
                                   grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD,
                                   pattern_restrictions=s.PATTERN_REPEATED | s.PATTERN_SEQUENCE,
                                   min_length=5, max_length=11,
                                   input_method=s.INPUT_PROGRAMMATIC)
    key = iss.provision_key(pin_policy=policy, pin="pasw!", app_usage=s.APP_SIGNATURE,
                            export_protection=s.PROTECTION_PUK,
                            delete_protection=s.PROTECTION_PIN)
    iss.close()
    info = protection(device, key)
    assert info == s.KeyProtectionInfo(
        protection_status=s.PROTSTAT_PIN_PROTECTED | s.PROTSTAT_PUK_PROTECTED,
        puk_format=s.FORMAT_ALPHANUMERIC, puk_retry_limit=7, puk_error_count=0,
        user_defined=True, user_modifiable=False, format=s.FORMAT_STRING, retry_limit=9,
        grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD,
        pattern_restrictions=s.PATTERN_REPEATED | s.PATTERN_SEQUENCE, min_length=5,
        max_length=11, input_method=s.INPUT_PROGRAMMATIC, pin_error_count=0,
        enable_pin_caching=False, biometric_protection=0, export_protection=s.PROTECTION_PUK,
        delete_protection=s.PROTECTION_PIN, key_backup=0)


def test_protection_info_pin_without_puk(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=2)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, b"\x00" * 32, b"1111",
                 codes=(s.ERROR_AUTHORIZATION,))
    info = protection(device, key)
    assert info.protection_status == s.PROTSTAT_PIN_PROTECTED
    assert (info.puk_format, info.puk_retry_limit, info.puk_error_count) == (0, 0, 0)
    assert info.pin_error_count == 1 and info.retry_limit == 2
