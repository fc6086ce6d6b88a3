"""PIN and PUK objects: formats, lengths, patterns, grouping, error counters, lock-out, PUK
unlock, PUK retry limit, changePin and setPin."""

import pytest

import sksissuer as s
from skshelpers import assert_no_trace, expect_error, protection, sha256, sign_and_verify

DIGEST = sha256(b"pin protected")


def sign(device, key, pin):
    pin = pin.encode() if isinstance(pin, str) else pin
    return device.sign_hashed_data(key.handle, s.SIG_ECDSA_SHA256, DIGEST, pin)


def bad_pin(device, key, pin="0000"):
    expect_error(sign, device, key, pin, codes=(s.ERROR_AUTHORIZATION,))


# ---------------------------------------------------------------------------------------------
# Formats and lengths
# ---------------------------------------------------------------------------------------------

FORMAT_CASES = [
    (s.FORMAT_NUMERIC, b"0123", True),
    (s.FORMAT_NUMERIC, b"12a4", False),
    (s.FORMAT_NUMERIC, b"12A4", False),
    (s.FORMAT_NUMERIC, b"12 4", False),
    (s.FORMAT_ALPHANUMERIC, b"AB12", True),
    (s.FORMAT_ALPHANUMERIC, b"ZZ09", True),
    (s.FORMAT_ALPHANUMERIC, b"ab12", False),
    (s.FORMAT_ALPHANUMERIC, b"AB-1", False),
    (s.FORMAT_STRING, "pä ß-1".encode("utf-8"), True),
    (s.FORMAT_STRING, b"ab12", True),
    (s.FORMAT_BINARY, b"\x00\xff\x80\x7f", True),
    (s.FORMAT_BINARY, b"\x01\x02\x03\x04\x05\x06\x07\x08", True),
]


@pytest.mark.parametrize("fmt,pin,ok", FORMAT_CASES,
                         ids=[f"{c[0]}-{c[1].hex()}-{'ok' if c[2] else 'bad'}"
                              for c in FORMAT_CASES])
def test_pin_format(new_issuer, device, fmt, pin, ok):
    iss = new_issuer()
    policy = iss.create_pin_policy(format=fmt, min_length=4, max_length=8)
    if ok:
        key = iss.provision_key(pin_policy=policy, pin=pin)
        iss.close()
        sign(device, key, pin)
        bad_pin(device, key, b"\x01" * len(pin) if fmt == s.FORMAT_BINARY else b"9999")
    else:
        expect_error(iss.create_key_entry, pin_policy=policy, pin=pin)
        assert_no_trace(device, iss)


@pytest.mark.parametrize("pin,ok", [(b"123", False), (b"1234", True), (b"123456", True),
                                    (b"1234567", False)])
def test_pin_length(new_issuer, device, pin, ok):
    iss = new_issuer()
    policy = iss.create_pin_policy(min_length=4, max_length=6)
    if ok:
        key = iss.provision_key(pin_policy=policy, pin=pin)
        iss.close()
        sign(device, key, pin)
    else:
        expect_error(iss.create_key_entry, pin_policy=policy, pin=pin)
        assert_no_trace(device, iss)


@pytest.mark.parametrize("kw", [dict(min_length=0), dict(min_length=5, max_length=4),
                                dict(max_length=129), dict(retry_limit=0),
                                dict(retry_limit=10001), dict(format=4), dict(grouping=4),
                                dict(input_method=3), dict(pattern_restrictions=0x20),
                                dict(pattern_restrictions=s.PATTERN_MISSING_GROUP,
                                     format=s.FORMAT_NUMERIC),
                                dict(pattern_restrictions=s.PATTERN_MISSING_GROUP,
                                     format=s.FORMAT_BINARY)],
                         ids=["min0", "min>max", "max129", "retry0", "retry10001", "format4",
                              "grouping4", "input3", "pattern0x20", "missinggroup-numeric",
                              "missinggroup-binary"])
def test_invalid_pin_policy_aborts(new_issuer, device, kw):
    iss = new_issuer()
    good = iss.create_key_entry()
    expect_error(iss.create_pin_policy, **kw)
    assert_no_trace(device, iss, [good.handle])


@pytest.mark.parametrize("puk,kw", [("123456", dict(retry_limit=10001)),
                                    ("123456", dict(format=4)),
                                    ("", dict(format=s.FORMAT_BINARY)),
                                    ("1" * 129, dict())],
                         ids=["retry10001", "format4", "empty", "129bytes"])
def test_invalid_puk_policy_aborts(new_issuer, device, puk, kw):
    iss = new_issuer()
    expect_error(iss.create_puk_policy, puk, **kw)
    assert_no_trace(device, iss)


def test_puk_without_retry_limit_delays(new_issuer, device):
    """retryLimit 0: the PUK never locks, but every unlock attempt is delayed (1-10 s)."""
    import time
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678", retry_limit=0)
    policy = iss.create_pin_policy(puk=puk, retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    bad_pin(device, key)
    for auth in (b"00000000", b"11111111", b"12345678"):
        t0 = time.monotonic()
        try:
            device.unlock_key(key.handle, auth)
        except s.SksError as e:
            assert e.status == s.ERROR_AUTHORIZATION and auth != b"12345678"
        assert time.monotonic() - t0 >= 0.9, "no delay before acting on the PUK"
    info = protection(device, key)
    assert not info.protection_status & (s.PROTSTAT_PIN_BLOCKED | s.PROTSTAT_PUK_BLOCKED)
    sign(device, key, "2580")


def test_puk_syntax_checked(new_issuer, device):
    """A numeric PUK must be digits only."""
    iss = new_issuer()
    expect_error(iss.create_puk_policy, "12345A", format=s.FORMAT_NUMERIC)
    assert_no_trace(device, iss)


# ---------------------------------------------------------------------------------------------
# Patterns
# ---------------------------------------------------------------------------------------------

PATTERN_CASES = [
    (s.PATTERN_TWO_IN_A_ROW, s.FORMAT_NUMERIC, b"1124", False),
    (s.PATTERN_TWO_IN_A_ROW, s.FORMAT_NUMERIC, b"1244", False),
    (s.PATTERN_TWO_IN_A_ROW, s.FORMAT_NUMERIC, b"1214", True),
    (s.PATTERN_THREE_IN_A_ROW, s.FORMAT_NUMERIC, b"1114", False),
    (s.PATTERN_THREE_IN_A_ROW, s.FORMAT_NUMERIC, b"4111", False),
    (s.PATTERN_THREE_IN_A_ROW, s.FORMAT_NUMERIC, b"1124", True),
    (s.PATTERN_SEQUENCE, s.FORMAT_NUMERIC, b"1234", False),
    (s.PATTERN_SEQUENCE, s.FORMAT_NUMERIC, b"9876", False),
    (s.PATTERN_SEQUENCE, s.FORMAT_NUMERIC, b"1235", True),
    (s.PATTERN_SEQUENCE, s.FORMAT_NUMERIC, b"1111", True),
    (s.PATTERN_REPEATED, s.FORMAT_NUMERIC, b"1231", False),
    (s.PATTERN_REPEATED, s.FORMAT_NUMERIC, b"1213", False),
    (s.PATTERN_REPEATED, s.FORMAT_NUMERIC, b"1234", True),
    (s.PATTERN_MISSING_GROUP, s.FORMAT_ALPHANUMERIC, b"1234", False),
    (s.PATTERN_MISSING_GROUP, s.FORMAT_ALPHANUMERIC, b"ABCD", False),
    (s.PATTERN_MISSING_GROUP, s.FORMAT_ALPHANUMERIC, b"AB12", True),
    (s.PATTERN_MISSING_GROUP, s.FORMAT_STRING, b"Ab12", False),
    (s.PATTERN_MISSING_GROUP, s.FORMAT_STRING, b"ab1-", False),
    (s.PATTERN_MISSING_GROUP, s.FORMAT_STRING, b"Ab1-", True),
    (s.PATTERN_SEQUENCE | s.PATTERN_THREE_IN_A_ROW, s.FORMAT_NUMERIC, b"2345", False),
    (s.PATTERN_SEQUENCE | s.PATTERN_THREE_IN_A_ROW, s.FORMAT_NUMERIC, b"2225", False),
    (s.PATTERN_SEQUENCE | s.PATTERN_THREE_IN_A_ROW, s.FORMAT_NUMERIC, b"2245", True),
    (0, s.FORMAT_NUMERIC, b"1111", True),
]


@pytest.mark.parametrize("patterns,fmt,pin,ok", PATTERN_CASES,
                         ids=[f"0x{c[0]:02x}-{c[2].decode()}-{'ok' if c[3] else 'bad'}"
                              for c in PATTERN_CASES])
def test_pin_patterns(new_issuer, device, patterns, fmt, pin, ok):
    iss = new_issuer()
    policy = iss.create_pin_policy(format=fmt, pattern_restrictions=patterns)
    if ok:
        key = iss.provision_key(pin_policy=policy, pin=pin)
        iss.close()
        sign(device, key, pin)
        assert protection(device, key).pattern_restrictions == patterns
    else:
        expect_error(iss.create_key_entry, pin_policy=policy, pin=pin)
        assert_no_trace(device, iss)


# ---------------------------------------------------------------------------------------------
# Issuer-set PINs
# ---------------------------------------------------------------------------------------------

def test_issuer_set_pin(new_issuer, device):
    """userDefined=false: the PIN travels encrypted and is part of the MAC."""
    iss = new_issuer()
    policy = iss.create_pin_policy(user_defined=False, user_modifiable=False,
                                   format=s.FORMAT_ALPHANUMERIC)
    key = iss.provision_key(pin_policy=policy, pin="K7Q2")
    iss.close()
    sign(device, key, "K7Q2")
    bad_pin(device, key, "K7Q3")
    info = protection(device, key)
    assert info.user_defined is False and info.user_modifiable is False


def test_issuer_set_pin_is_checked_too(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(user_defined=False, pattern_restrictions=s.PATTERN_SEQUENCE)
    expect_error(iss.create_key_entry, pin_policy=policy, pin="4567")
    assert_no_trace(device, iss)


def test_pin_policy_of_other_session_rejected(new_issuer, device):
    a = new_issuer()
    pa = a.create_pin_policy()
    b = new_issuer()
    b.create_pin_policy()  # keep counters realistic
    forged = s.PinPolicy(pa.handle, pa.id, None, True, True, 0, 3, 0, 0, 4, 8, 0)
    expect_error(b.create_key_entry, pin_policy=forged, pin="1357")
    assert_no_trace(device, b)


# ---------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------

def test_grouping_none(new_issuer, device):
    """Independent PINs and error counters."""
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_NONE)
    k1 = iss.provision_key(pin_policy=policy, pin="1111", app_usage=s.APP_SIGNATURE)
    k2 = iss.provision_key(pin_policy=policy, pin="2222", app_usage=s.APP_SIGNATURE)
    iss.close()
    sign(device, k1, "1111")
    sign(device, k2, "2222")
    bad_pin(device, k1, "2222")
    assert protection(device, k1).pin_error_count == 1
    assert protection(device, k2).pin_error_count == 0


def test_grouping_shared_requires_same_pin(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_SHARED)
    k1 = iss.provision_key(pin_policy=policy, pin="1357")
    expect_error(iss.create_key_entry, pin_policy=policy, pin="2468")
    assert_no_trace(device, iss, [k1.handle])


def test_grouping_shared_counters_and_lockout(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("87654321")
    policy = iss.create_pin_policy(puk=puk, grouping=s.GROUPING_SHARED, retry_limit=3)
    k1 = iss.provision_key(pin_policy=policy, pin="1357", app_usage=s.APP_SIGNATURE)
    k2 = iss.provision_key(s.KEY_EC_P384, pin_policy=policy, pin="1357",
                           app_usage=s.APP_AUTHENTICATION)
    iss.close()
    bad_pin(device, k1)
    assert protection(device, k2).pin_error_count == 1, "shared PIN: one error counter"
    bad_pin(device, k2)
    assert protection(device, k1).pin_error_count == 2
    sign(device, k2, "1357")
    assert protection(device, k1).pin_error_count == 0, "success resets the shared counter"
    for key in (k1, k2, k1):
        bad_pin(device, key)
    for key in (k1, k2):
        assert protection(device, key).protection_status & s.PROTSTAT_PIN_BLOCKED
        bad_pin(device, key, "1357")
    device.unlock_key(k2.handle, b"87654321")
    for key in (k1, k2):
        assert not protection(device, key).protection_status & s.PROTSTAT_PIN_BLOCKED
        sign(device, key, "1357")


def test_grouping_shared_change_pin_propagates(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_SHARED)
    k1 = iss.provision_key(pin_policy=policy, pin="1357")
    k2 = iss.provision_key(pin_policy=policy, pin="1357")
    iss.close()
    device.change_pin(k1.handle, b"1357", b"9753")
    sign(device, k2, "9753")
    bad_pin(device, k2, "1357")


def test_grouping_signature_plus_standard(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD)
    sig1 = iss.provision_key(pin_policy=policy, pin="1111", app_usage=s.APP_SIGNATURE)
    auth = iss.provision_key(pin_policy=policy, pin="2222", app_usage=s.APP_AUTHENTICATION)
    enc = iss.provision_key(pin_policy=policy, pin="2222", app_usage=s.APP_ENCRYPTION)
    sig2 = iss.provision_key(pin_policy=policy, pin="1111", app_usage=s.APP_SIGNATURE)
    iss.close()
    bad_pin(device, auth)
    assert protection(device, enc).pin_error_count == 1
    assert protection(device, sig1).pin_error_count == 0
    assert protection(device, sig2).pin_error_count == 0
    bad_pin(device, sig2)
    assert protection(device, sig1).pin_error_count == 1
    assert protection(device, auth).pin_error_count == 1
    sign(device, sig1, "1111")
    sign(device, enc, "2222")
    device.change_pin(sig1.handle, b"1111", b"3333")
    sign(device, sig2, "3333")
    sign(device, auth, "2222")


def test_change_pin_respects_grouping(new_issuer, device):
    """After a PIN change the grouping rules still hold: under signature+standard and unique
    a group's new PIN must differ from the other groups' PINs."""
    iss = new_issuer()
    sps = iss.create_pin_policy(grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD)
    sig = iss.provision_key(pin_policy=sps, pin="1111", app_usage=s.APP_SIGNATURE)
    std = iss.provision_key(pin_policy=sps, pin="2222", app_usage=s.APP_AUTHENTICATION)
    uni = iss.create_pin_policy(grouping=s.GROUPING_UNIQUE)
    u_enc = iss.provision_key(pin_policy=uni, pin="3333", app_usage=s.APP_ENCRYPTION)
    u_all = iss.provision_key(pin_policy=uni, pin="4444", app_usage=s.APP_UNIVERSAL)
    iss.close()
    expect_error(device.change_pin, sig.handle, b"1111", b"2222")
    expect_error(device.change_pin, std.handle, b"2222", b"1111")
    expect_error(device.change_pin, u_enc.handle, b"3333", b"4444")
    sign(device, sig, "1111")
    sign(device, std, "2222")
    sign(device, u_all, "4444")
    device.change_pin(u_enc.handle, b"3333", b"5555")
    sign(device, u_enc, "5555")


@pytest.mark.parametrize("first,second,ok", [
    ((s.APP_SIGNATURE, "1111"), (s.APP_SIGNATURE, "2222"), False),        # sig PINs differ
    ((s.APP_SIGNATURE, "1111"), (s.APP_AUTHENTICATION, "1111"), False),   # std == sig
    ((s.APP_AUTHENTICATION, "2222"), (s.APP_UNIVERSAL, "3333"), False),   # std PINs differ
    ((s.APP_AUTHENTICATION, "2222"), (s.APP_UNIVERSAL, "2222"), True),
], ids=["sig-differ", "std-equals-sig", "std-differ", "std-same"])
def test_grouping_signature_plus_standard_enforced(new_issuer, device, first, second, ok):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD)
    k1 = iss.provision_key(pin_policy=policy, pin=first[1], app_usage=first[0])
    if ok:
        iss.provision_key(pin_policy=policy, pin=second[1], app_usage=second[0])
        iss.close()
    else:
        expect_error(iss.create_key_entry, pin_policy=policy, pin=second[1],
                     app_usage=second[0])
        assert_no_trace(device, iss, [k1.handle])


def test_grouping_unique(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_UNIQUE)
    pins = {s.APP_SIGNATURE: "1111", s.APP_AUTHENTICATION: "2222", s.APP_ENCRYPTION: "3333",
            s.APP_UNIVERSAL: "4444"}
    keys = {u: iss.provision_key(pin_policy=policy, pin=p, app_usage=u) for u, p in pins.items()}
    auth2 = iss.provision_key(pin_policy=policy, pin="2222", app_usage=s.APP_AUTHENTICATION)
    iss.close()
    bad_pin(device, auth2)
    assert protection(device, keys[s.APP_AUTHENTICATION]).pin_error_count == 1
    for u in (s.APP_SIGNATURE, s.APP_ENCRYPTION, s.APP_UNIVERSAL):
        assert protection(device, keys[u]).pin_error_count == 0
    for u, p in pins.items():
        sign(device, keys[u], p)


@pytest.mark.parametrize("second", [(s.APP_AUTHENTICATION, "1111"),
                                    (s.APP_SIGNATURE, "2222"),
                                    (s.APP_UNIVERSAL, "1111")],
                         ids=["other-usage-same-pin", "same-usage-other-pin",
                              "universal-same-pin"])
def test_grouping_unique_enforced(new_issuer, device, second):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_UNIQUE)
    k1 = iss.provision_key(pin_policy=policy, pin="1111", app_usage=s.APP_SIGNATURE)
    expect_error(iss.create_key_entry, pin_policy=policy, pin=second[1], app_usage=second[0])
    assert_no_trace(device, iss, [k1.handle])


# ---------------------------------------------------------------------------------------------
# Error counters, lock-out, PUK
# ---------------------------------------------------------------------------------------------

def test_lockout_and_puk_unlock(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678", retry_limit=3)
    policy = iss.create_pin_policy(puk=puk, retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    info = protection(device, key)
    assert info.protection_status == s.PROTSTAT_PIN_PROTECTED | s.PROTSTAT_PUK_PROTECTED
    bad_pin(device, key)
    bad_pin(device, key)
    assert protection(device, key).pin_error_count == 2
    sign(device, key, "2580")
    assert protection(device, key).pin_error_count == 0, "a good PIN resets the counter"
    for _ in range(3):
        bad_pin(device, key)
    info = protection(device, key)
    assert info.protection_status & s.PROTSTAT_PIN_BLOCKED
    assert info.pin_error_count == 3
    bad_pin(device, key, "2580")   # the right PIN does not help a blocked key
    expect_error(device.unlock_key, key.handle, b"00000000", codes=(s.ERROR_AUTHORIZATION,))
    assert protection(device, key).puk_error_count == 1
    device.unlock_key(key.handle, b"12345678")
    info = protection(device, key)
    assert not info.protection_status & s.PROTSTAT_PIN_BLOCKED
    assert info.pin_error_count == 0
    assert info.puk_error_count == 0, "a good PUK resets the PUK counter"
    sign(device, key, "2580")


def test_unlock_without_puk_rejected(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    bad_pin(device, key)
    expect_error(device.unlock_key, key.handle, b"12345678")
    assert protection(device, key).protection_status & s.PROTSTAT_PIN_BLOCKED


def test_puk_retry_limit(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("CAFE42", format=s.FORMAT_ALPHANUMERIC, retry_limit=2)
    policy = iss.create_pin_policy(puk=puk, retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    info = protection(device, key)
    assert (info.puk_format, info.puk_retry_limit) == (s.FORMAT_ALPHANUMERIC, 2)
    bad_pin(device, key)
    for n in (1, 2):
        expect_error(device.unlock_key, key.handle, b"CAFE43", codes=(s.ERROR_AUTHORIZATION,))
        assert protection(device, key).puk_error_count == n
    info = protection(device, key)
    assert info.protection_status & s.PROTSTAT_PUK_BLOCKED
    expect_error(device.unlock_key, key.handle, b"CAFE42", codes=(s.ERROR_AUTHORIZATION,))
    expect_error(device.set_pin, key.handle, b"CAFE42", b"1470", codes=(s.ERROR_AUTHORIZATION,))
    assert protection(device, key).protection_status & s.PROTSTAT_PIN_BLOCKED


@pytest.mark.parametrize("fmt,value", [(s.FORMAT_STRING, "pük-Wört".encode()),
                                       (s.FORMAT_BINARY, b"\x00\x01\xfe\xff")],
                         ids=["string", "binary"])
def test_puk_formats(new_issuer, device, fmt, value):
    iss = new_issuer()
    puk = iss.create_puk_policy(value, format=fmt)
    policy = iss.create_pin_policy(puk=puk, retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    bad_pin(device, key)
    device.unlock_key(key.handle, value)
    sign(device, key, "2580")


# ---------------------------------------------------------------------------------------------
# changePin / setPin
# ---------------------------------------------------------------------------------------------

def test_change_pin(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(pattern_restrictions=s.PATTERN_SEQUENCE, retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    expect_error(device.change_pin, key.handle, b"0000", b"1470",
                 codes=(s.ERROR_AUTHORIZATION,))
    assert protection(device, key).pin_error_count == 1
    expect_error(device.change_pin, key.handle, b"2580", b"1234")   # sequence: policy says no
    expect_error(device.change_pin, key.handle, b"2580", b"147")    # too short
    sign(device, key, "2580")
    device.change_pin(key.handle, b"2580", b"1470")
    sign(device, key, "1470")
    bad_pin(device, key, "2580")


def test_change_pin_not_user_modifiable(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(user_modifiable=False)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    expect_error(device.change_pin, key.handle, b"2580", b"1470")
    sign(device, key, "2580")


def test_change_pin_of_blocked_key_rejected(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    bad_pin(device, key)
    expect_error(device.change_pin, key.handle, b"2580", b"1470",
                 codes=(s.ERROR_AUTHORIZATION,))


def test_set_pin_with_puk(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678")
    policy = iss.create_pin_policy(puk=puk, retry_limit=2, grouping=s.GROUPING_SHARED)
    k1 = iss.provision_key(pin_policy=policy, pin="2580")
    k2 = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    bad_pin(device, k1)
    bad_pin(device, k1)
    assert protection(device, k2).protection_status & s.PROTSTAT_PIN_BLOCKED
    expect_error(device.set_pin, k1.handle, b"87654321", b"1470",
                 codes=(s.ERROR_AUTHORIZATION,))
    expect_error(device.set_pin, k1.handle, b"12345678", b"14")   # violates the policy
    device.set_pin(k1.handle, b"12345678", b"1470")
    for key in (k1, k2):
        assert not protection(device, key).protection_status & s.PROTSTAT_PIN_BLOCKED
        sign(device, key, "1470")


def test_set_pin_requires_user_modifiable(new_issuer, device):
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678")
    policy = iss.create_pin_policy(puk=puk, user_modifiable=False)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    expect_error(device.set_pin, key.handle, b"12345678", b"1470")
    sign(device, key, "2580")


def test_no_pin_key_has_no_pin_operations(new_issuer, device):
    iss = new_issuer()
    key = iss.provision_key()
    iss.close()
    assert protection(device, key).protection_status == 0
    expect_error(device.change_pin, key.handle, b"", b"1470")
    expect_error(device.unlock_key, key.handle, b"12345678")
    sign_and_verify(device, key)


# ---------------------------------------------------------------------------------------------
# Other key protection options
# ---------------------------------------------------------------------------------------------

def test_pin_caching_needs_trusted_gui(new_issuer, device):
    iss = new_issuer()
    gui = iss.create_pin_policy(input_method=s.INPUT_TRUSTED_GUI)
    key = iss.provision_key(pin_policy=gui, pin="2580", enable_pin_caching=True)
    any_ = iss.create_pin_policy(input_method=s.INPUT_ANY)
    expect_error(iss.create_key_entry, pin_policy=any_, pin="2580", enable_pin_caching=True)
    assert_no_trace(device, iss, [key.handle])


def test_pin_caching_recorded(new_issuer, device):
    iss = new_issuer()
    gui = iss.create_pin_policy(input_method=s.INPUT_TRUSTED_GUI)
    key = iss.provision_key(pin_policy=gui, pin="2580", enable_pin_caching=True)
    iss.close()
    info = protection(device, key)
    assert info.enable_pin_caching is True and info.input_method == s.INPUT_TRUSTED_GUI


def test_pin_without_policy_rejected(new_issuer, device):
    iss = new_issuer()
    expect_error(iss.create_key_entry, pin=b"2580")
    assert_no_trace(device, iss)


def test_device_pin_and_biometrics_follow_device_info(new_issuer, device):
    info = device.device_info()
    if not info.device_pin_support:
        iss = new_issuer()
        expect_error(iss.create_key_entry, device_pin_protection=True)
        assert_no_trace(device, iss)
    if not info.biometric_support:
        iss = new_issuer()
        policy = iss.create_pin_policy()
        expect_error(iss.create_key_entry, pin_policy=policy, pin="2580",
                     biometric_protection=s.BIOMETRIC_ALTERNATIVE)
        assert_no_trace(device, iss)
    iss = new_issuer()
    policy = iss.create_pin_policy()
    expect_error(iss.create_key_entry, pin_policy=policy, pin="2580", device_pin_protection=True)
    assert_no_trace(device, iss)


def test_error_counter_persists_across_processes(new_issuer, device, store, sks_binary, tmp_path):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    bad_pin(device, key)
    bad_pin(device, key)
    device.close()
    other = s.Device(sks_binary, store, stderr_path=tmp_path / "other.stderr")
    try:
        assert other.get_key_protection_info(key.handle).pin_error_count == 2
        bad_pin(other, key)
        assert other.get_key_protection_info(key.handle).protection_status & \
            s.PROTSTAT_PIN_BLOCKED
    finally:
        other.close()


def test_concurrent_wrong_pins_are_all_counted(new_issuer, device, store, sks_binary, tmp_path):
    """Two device processes on one store guessing at the same time: every wrong guess
    counts (no lost updates of the error counter)."""
    import threading
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=1000)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    devices = [s.Device(sks_binary, store, stderr_path=tmp_path / f"d{i}.stderr")
               for i in range(2)]
    errors = []

    def guess(dev):
        try:
            for _ in range(15):
                bad_pin(dev, key)
        except Exception as e:   # reported below
            errors.append(e)
    threads = [threading.Thread(target=guess, args=(d,)) for d in devices]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
    finally:
        for d in devices:
            d.close()
    assert not errors, errors
    assert protection(device, key).pin_error_count == 30
