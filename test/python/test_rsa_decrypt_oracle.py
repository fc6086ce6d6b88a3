"""RSA decryption gives a padding oracle to nobody. PKCS#1 v1.5 uses implicit rejection
(draft-irtf-cfrg-rsa-guidance): a ciphertext with wrong padding decrypts to a synthetic message
derived from the private key and the ciphertext, with the same answer status as a good one.
OAEP failures are one and the same error. The ciphertexts are made with the raw RSA public
operation, so every kind of malformed padding is tried."""

import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

import sksissuer as s
from skshelpers import handle_of, run_ok as run

# The 2048-bit test key and vectors of draft-irtf-cfrg-rsa-guidance, appendix B.1.
DRAFT_KEY = b"""-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDIzIOXFAmNpWyq
I2QPk9yJl8FjcpaPwbDG31ETwclOiyHkitIpfmVBkBG05tj15zsbeLJXQAMh0e9r
YC1OyM6NFByUkF60rTBmOaSSBlNLbn8mB0I+l9/9EzyI1yE5ne+8fpbM3L1/Oq4f
6JJxK/tJKYF9URZmRAofrLeiCPXqFlkQrdij8tSXICNgzLYyAk8NBxacGRjzFveU
sUOu9U7IdSKkwCl4+WiZgL/79knDB+gYGb/4hAljjUi9lL4VK1n/ZJ+gvWKdD/oY
E8Or9LVr08LqVGXf+hRYkpKp2KJK0mvn7gUQdBtjgtQ8g9W/pApGYT0GK+RFUX28
rwy04adpAgMBAAECggEAFFUBDg8tWHZjpmam/xzNu/Dt2BAGRtAqAjkikImSxK05
5VZZKXJu9lCMOnEVjvC2/3UdOdB1gLstLwYyEEQtBgP/UNu9ezX+LJuxmkehr4Wk
wkkB4CyotYt5GbIO3zKqz79RrbS8S2G5t+loyqTVcPcO8Y2AYyKIk+R9Q578p5Ml
m88s0Qij2GiM3weOeseZlp8jOdLB9SK5aWhGKakzuq7CaBYl6rhPTlb0RH6diPua
GZz3ECPg4lexREGzPITTvGfKgDHSYSYYEDp6CkCEQmL3XYiQzWFuUfkDVIj9bgmd
6P9tZaT/EYJUgHyfWNL7uouhUdyMaL40nJd6IE4EwQKBgQD49a1rqCiTG+pFm4o/
bcBB0jSCQJwlcelj8x90hgKiVjcbOIPtRZ7PlwUmRZ7dFuBVIvWkXZR1Gy7C2vJy
x/iBalLADRgIAXFjTaiZ15cyIvUbk3YwVIaWqffYwkpZSXwe/NRVz7l+6G0rbTSX
KzMv2jA/BJmbTra1zAuzPndh3QKBgQDOei47SakLljMKEtxoK9+9+66N1twDthR6
771XV0Pw9tpNhiNQYbca/ZytLTQCXlashrD3dD6zXhrLyiN4lUJEZbcG7SIXXlcY
yMcLZwPqj2tRD5Rb5I5aNrs8PJFzK1id/AXXLYCQMZRFK9ohNIZH7HKUPxGoRuYv
rr6OtTaw/QKBgHb+FfGK4jnN8d9rRFykvGu5aNeIwhkzpPXc0oADPWcSBizAim3y
BMH70L5GMHRD5t1KZFY3VCnU4DjKJW+vHJvekcaxe3b4GZX5HEjLvrx78ONJTAg1
nk6M1qWH17ltYiH9fg+1xVdfCC7ld2l5gHGyu7SjIjgVG0cxS7ZUeQMRAoGBAJmI
SLBVSZoQCcvH0pSzax/98gIObnNkBT6U3hoADck0BYf34nJ29ozfYI11O2M3ewO2
9AhNLAJ8SziWCmIzup7Zc4t28Q6nW+RWB4v3AfZ8xrPz/cGG5kM2x2s3LoCRDsgL
CtzCPQL7muEEhqKCSAdbTqflbd/POILkUVYUcaKRAoGAZDv3RkKffYNmegZTAhNH
77/AXmNR+CGp3rtg4OzN5QBa2ensMeVY9+ksKTKOdFadfO98dMq8KzVe1AGhoJFL
Tjy7BkhOWBlgURae0UyqLvpuoETgVNJhRMwWKcVQEFWKBOEz9Et8JE2sJb+RPFe4
kO5J9UglnNY0BP72hZ3Pl1o=
-----END PRIVATE KEY-----
"""

DRAFT_VECTORS = [  # (title, ciphertext, expected plaintext)
    ("valid",
     "8bfe264e85d3bdeaa6b8851b8e3b956ee3d226fd3f69063a86880173a273d9f283b2eebdd1ed35f7e02d91c571981b6737d5320bd8396b0f3ad5b019daec1b0aab3cbbc026395f4fd14f13673f2dfc81f9b660ec26ac381e6db3299b4e460b43fab9955df2b3cfaa20e900e19c856238fd371899c2bf2ce8c868b76754e5db3b036533fd603746be13c10d4e3e6022ebc905d20c2a7f32b215a4cd53b3f44ca1c327d2c2b651145821c08396c89071f665349c25e44d2733cd9305985ceef6430c3cf57af5fa224089221218fa34737c79c446d28a94c41c96e4e92ac53fbcf384dea8419ea089f8784445a492c812eb0d409467f75afd7d4d1078886205a066",
     "6c6f72656d20697073756d20646f6c6f722073697420616d6574"),
    ("invalid, decrypting to empty",
     "20aaa8adbbc593a924ba1c5c7990b5c2242ae4b99d0fe636a19a4cf754edbcee774e472fe028160ed42634f8864900cb514006da642cae6ae8c7d087caebcfa6dad1551301e130344989a1d462d4164505f6393933450c67bc6d39d8f5160907cabc251b737925a1cf21e5c6aa5781b7769f6a2a583d97cce008c0f8b6add5f0b2bd80bee60237aa39bb20719fe75749f4bc4e42466ef5a861ae3a92395c7d858d430bfe38040f445ea93fa2958b503539800ffa5ce5f8cf51fa8171a91f36cb4f4575e8de6b4d3f096ee140b938fd2f50ee13f0d050222e2a72b0a3069ff3a6738e82c87090caa5aed4fcbe882c49646aa250b98f12f83c8d528113614a29e7",
     ""),
    ("invalid, null padded ciphertext",
     "006f89db685c0a132700c6a17f88a37a6635d0ab89de4c45dc09736c891ca5bf3401ce34c6e5d51e94ed2f518857ddc12d9f9f9e68e01cdc30d86ae5dd83988c0c46a8e39daa1b328a23def551d67fa1964fb15242c83ddd7dd5b1aec720a391d0b86cb16cf4d3c466850c3df88a3ed85993900d1287a0c90c4b04d34ba29e59967661f3f10e0c998f64e14e777e8e81371eca5318b4e0b53414292130c821477c51e2bff844836ab10dff293d82e4f40d345968ef268c92ed0bc238f31d50f4d3f759c23964923e135d15527556410fbd2c451d6a2aa852dc88b01139c6fdd826736d8cd3780601b2977b09c080bd8c0fa471606ad59f053ad33d9eeb905f20",
     "2b5dd72df3cae37f1aef"),
    ("invalid, second to last length",
     "1439e08c3f84c1a7fec74ce07614b20e01f6fa4e8c2a6cffdc3520d8889e5d9a950c6425798f85d4be38d300ea5695f13ecd4cb389d1ff5b82484b494d6280ab7fa78e645933981cb934cce8bfcd114cc0e6811eefa47aae20af638a1cd163d2d3366186d0a07df0c81f6c9f3171cf3561472e98a6006bf75ddb457bed036dcce199369de7d94ef2c68e8467ee0604eea2b3009479162a7891ba5c40cab17f49e1c438cb6eaea4f76ce23cce0e483ff0e96fa790ea15be67671814342d0a23f4a20262b6182e72f3a67cd289711503c85516a9ed225422f98b116f1ab080a80abd6f0216df88d8cfd67c139243be8dd78502a7aaf6bc99d7da71bcdf627e7354",
     "0f9b"),
    ("invalid first byte of padding",
     "9b2ec9c0c917c98f1ad3d0119aec6be51ae3106e9af1914d48600ab6a2c0c0c8ae02a2dc3039906ff3aac904af32ec798fd65f3ad1afa2e69400e7c1de81f5728f3b3291f38263bc7a90a0563e43ce7a0d4ee9c0d8a716621ca5d3d081188769ce1b131af7d35b13dea99153579c86db31fe07d5a2c14d621b77854e48a8df41b5798563af489a291e417b6a334c63222627376118c02c53b6e86310f728734ffc86ef9d7c8bf56c0c841b24b82b59f51aee4526ba1c4268506d301e4ebc498c6aebb6fd5258c876bf900bac8ca4d309dd522f6a6343599a8bc3760f422c10c72d0ad527ce4af1874124ace3d99bb74db8d69d2528db22c3a37644640f95c05f",
     "a1f8c9255c35cfba403ccc"),
    ("invalid, padding separator missing",
     "3d1b97e7aa34eaf1f4fc171ceb11dcfffd9a46a5b6961205b10b302818c1fcc9f4ec78bf18ea0cee7e9fa5b16fb4c611463b368b3312ac11cf9c06b7cf72b54e284848a508d3f02328c62c2999d0fb60929f81783c7a256891bc2ff4d91df2af96a24fc5701a1823af939ce6dbdc510608e3d41eec172ad2d51b9fc61b4217c923cadcf5bac321355ef8be5e5f090cdc2bd0c697d9058247db3ad613fdce87d2955a6d1c948a5160f93da21f731d74137f5d1f53a1923adb513d2e6e1589d44cc079f4c6ddd471d38ac82d20d8b1d21f8d65f3b6907086809f4123e08d86fb38729585de026a485d8f0e703fd4772f6668febf67df947b82195fa3867e3a3065",
     "6f09a0b62699337c497b0b"),
]




@pytest.fixture
def draft_key(sks_binary, store, tmp_path):
    """The draft's test key, imported into the store: (handle, public numbers)."""
    key_pem = tmp_path / "k2048.pem"
    key_pem.write_bytes(DRAFT_KEY)
    cert_pem = tmp_path / "k2048.crt"
    run("openssl", "req", "-x509", "-new", "-key", key_pem, "-subj", "/CN=draft key", "-days", "2", "-out", cert_pem)
    run(sks_binary, "--store", store, "import", "--name", "draft", "--key", key_pem, "--cert", cert_pem)
    pub = x509.load_pem_x509_certificate(cert_pem.read_bytes()).public_key().public_numbers()
    return handle_of(sks_binary, store, "draft"), pub


def raw_encrypt(pub, em):
    k = (pub.n.bit_length() + 7) // 8
    assert len(em) == k
    return pow(int.from_bytes(em, "big"), pub.e, pub.n).to_bytes(k, "big")


def malformed_encodings(k, msg=b"attack at dawn"):
    ps = bytes(b % 255 + 1 for b in os.urandom(k - 3 - len(msg)))
    good = b"\x00\x02" + ps + b"\x00" + msg
    return {
        "first byte not zero": b"\x01" + good[1:],
        "block type 1": b"\x00\x01" + good[2:],
        "no separator": b"\x00\x02" + bytes(b % 255 + 1 for b in os.urandom(k - 2)),
        "separator after seven padding bytes": b"\x00\x02" + ps[:7] + b"\x00" + os.urandom(k - 10),
        "random": b"\x00" + os.urandom(k - 1),
    }, good


def test_draft_vectors(device, draft_key):
    handle, _ = draft_key
    for title, ct, expected in DRAFT_VECTORS:
        assert device.asymmetric_key_decrypt(handle, s.ASYM_RSA_PKCS1, bytes.fromhex(ct)).hex() == expected, title


def test_bad_pkcs1_padding_gives_no_distinct_answer(device, draft_key):
    """The attack: ciphertexts whose padding is wrong in every way a Bleichenbacher oracle
    distinguishes. Each must decrypt like a good one, to the same synthetic message each
    time, and different ciphertexts to different messages."""
    handle, pub = draft_key
    k = 256
    bad, good = malformed_encodings(k)
    assert device.asymmetric_key_decrypt(handle, s.ASYM_RSA_PKCS1, raw_encrypt(pub, good)) == b"attack at dawn"
    seen = set()
    for what, em in bad.items():
        ct = raw_encrypt(pub, em)
        first = device.asymmetric_key_decrypt(handle, s.ASYM_RSA_PKCS1, ct)   # no SksError
        again = device.asymmetric_key_decrypt(handle, s.ASYM_RSA_PKCS1, ct)
        assert first == again, what                 # deterministic: nothing to average out
        assert len(first) <= k - 11, what
        assert first not in seen, what               # derived from the ciphertext
        seen.add(first)


def test_oaep_failures_are_one_answer(device, draft_key, sks_binary, store):
    handle, pub = draft_key
    k = 256
    pubkey = pub.public_key()
    good = pubkey.encrypt(b"secret", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                                                   label=None))
    assert device.asymmetric_key_decrypt(handle, s.ASYM_RSA_OAEP_SHA256, good) == b"secret"
    wrong_label = pubkey.encrypt(b"secret", padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                         algorithm=hashes.SHA256(), label=b"other"))
    attempts = {
        "first byte not zero": raw_encrypt(pub, b"\x01" + os.urandom(k - 1)),
        "random after zero": raw_encrypt(pub, b"\x00" + os.urandom(k - 1)),
        "wrong label": wrong_label,
        "other hash": pubkey.encrypt(b"secret", padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                             algorithm=hashes.SHA1(), label=None)),
        "short": good[:-1],
        "not below the modulus": b"\xff" * k,
    }
    answers = set()
    for what, ct in attempts.items():
        with pytest.raises(s.SksError) as e:
            device.asymmetric_key_decrypt(handle, s.ASYM_RSA_OAEP_SHA256, ct)
        answers.add((e.value.status, e.value.message))
    assert len(answers) == 1, answers
