"""A SmartCard-HSM that refuses a step half-way through making a key must be left as it was:
`sks hsm restore` (hsmUnwrapKey, 216) puts the key on the card first and describes it after, so
a card that will not sign the key's certificate or write its description (PrKD, C4xx) or
certificate (CExx) makes the driver delete the key and what it wrote of it again. The virtual
SmartCard-HSM (tools/sks-vhsm) refuses on purpose with --fault sign-refused / prkd-write-refused /
cert-write-refused; OpenSC (opensc-tool's ENUMERATE OBJECTS, pkcs15-tool, pkcs11-tool) judges
that the card holds exactly the keys and files it held before. A label longer than the card's
64 bytes is refused by hsmGenerateKeyPair and hsmUnwrapKey before any APDU is sent, which the
card's own APDU log shows. The same for hsmDomainUnwrapKey (228) is in test_schsm_domains.py.
"""

import os
import re
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import provtools as pt  # noqa: E402
import sksissuer as wire  # noqa: E402
from pcscrig import REFUSAL_IDS, REFUSALS_AFTER_UNWRAP, SELECT_HSM, DriverPipe, PcscRig, card_objects  # noqa: E402,E501

SKS = str(pt.SKS)
BUILD = str(pt.BUILD)
P11 = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"
PIPE = os.path.join(BUILD, "test", "helpers", "sks_transport_pipe")
SO_PIN = "3537363231383830"
PIN = "648219"
P256 = "https://webpki.github.io/sks/algorithm#ec.nist.p256"
LONG_LABEL = "L" * 65          # one byte more than a SmartCard-HSM label takes


class Card:
    """The virtual SmartCard-HSM in slot 0 and the tools that reach it."""

    def __init__(self, rig):
        self.rig = rig
        self.state = rig.path("refusals.json")
        rig.vhsm(0, state=self.state)
        rig.wait_for_card(0)
        self.dev = "pcsc:" + rig.reader(0)
        self.env = dict(rig.env, HOME=rig.home, OPENSSL_MODULES=BUILD)
        self.tmp = tempfile.mkdtemp(prefix="sks-refusals-", dir=rig.base)

    @property
    def vhsm(self):
        return self.rig.cards[0]

    def path(self, name):
        return os.path.join(self.tmp, name)

    def sks(self, *args):
        return pt._text(pt.run([SKS, "--device", self.dev, *args, "--pin-file", "-"], env=self.env,
                               input=f"{PIN}\n".encode()).stdout)

    def sks_fails(self, *args):
        return pt.run_fails([SKS, "--device", self.dev, *args, "--pin-file", "-"], env=self.env,
                            input=f"{PIN}\n".encode())

    def reinsert(self, fault=None, fault_after=0):
        """The same card (state file) again, refusing as sks-vhsm --fault / --fault-after say."""
        self.rig.reinsert(0, fault=fault, fault_after=fault_after)

    def objects(self):
        return card_objects(self.env, 0)

    def opensc_keys(self):
        """(pkcs15-tool's private key labels, pkcs11-tool's private key objects) of the card."""
        p15 = pt._text(pt.run(["pkcs15-tool", "--reader", "0", "--list-keys"], env=self.env).stdout)
        p11 = pt._text(pt.run(["pkcs11-tool", "--module", P11, "--slot-index", "0", "--login", "--pin", PIN,
                               "--list-objects", "--type", "privkey"], env=self.env).stdout)
        return (sorted(re.findall(r"Private \w+ Key \[(.*)\]", p15)),
                sorted(re.findall(r"label:\s+(.*)", p11)))


@pytest.fixture(scope="module")
def rig():
    pt.require_build()
    for tool in ("opensc-tool", "pkcs11-tool", "pkcs15-tool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/install-deps.sh installs opensc")
    with PcscRig() as r:
        r.home = tempfile.mkdtemp(prefix="sks-refusals-home-", dir=r.base)
        yield r


@pytest.fixture(scope="module")
def card(rig):
    """A card with a DKEK (made on the card: --dkek-shares 0) and one key "kept", backed up with
    only its CV request (no --subject), so a restore with --subject has the card sign a
    certificate for the restored key."""
    c = Card(rig)
    pt.run([SKS, "--device", c.dev, "hsm", "init", "--so-pin-file", "-", "--pin-file", "-", "--dkek-shares", "0"],
           env=c.env, input=f"{SO_PIN}\n{PIN}\n".encode())
    c.sks("generate", "--name", "kept", "--algorithm", "P-256")
    c.backup = c.path("kept.wrap")
    c.sks("hsm", "backup", "--name", "kept", "--out", c.backup)
    return c


@pytest.fixture
def sound(card):
    """The card without a fault after the test, whatever the test did to it."""
    yield card
    if card.vhsm.fault is not None:
        card.reinsert()


def test_the_backup_restores_on_a_sound_card(sound):
    """The control for the refusals below: the same restore on a card that does not refuse
    adds one key (CCxx), its PrKD (C4xx) and certificate (CExx), which OpenSC lists."""
    before = sound.objects()
    out = sound.sks("hsm", "restore", sound.backup, "--name", "restored-ok", "--subject", "CN=restored ok")
    assert "restored 'restored-ok'" in out, out
    added = sorted(set(sound.objects()) - set(before))
    assert [o[:2] for o in added] == ["C4", "CC", "CE"] and len({o[2:] for o in added}) == 1, added
    assert "restored-ok" in sound.opensc_keys()[0]


@pytest.mark.parametrize("fault,after,named", REFUSALS_AFTER_UNWRAP, ids=REFUSAL_IDS)
def test_restore_refused_half_way_leaves_no_key(sound, fault, after, named):
    before, keys_before = sound.objects(), sound.opensc_keys()
    sound.reinsert(fault, after)
    mark = len(sound.vhsm.apdu_lines())
    name = f"refused-{fault}-{after}"
    err = sound.sks_fails("hsm", "restore", sound.backup, "--name", name, "--subject", f"CN={name}")
    assert named in err and re.search(r"the new key \d+ was deleted again", err), err
    log = sound.vhsm.apdu_lines()[mark:]
    sound.reinsert()
    assert sound.objects() == before                      # no key, PrKD or certificate left
    assert sound.opensc_keys() == keys_before
    # the key had been on the card (UNWRAP KEY answered 9000) before the refusal: it was deleted
    unwrapped = [line for line in log if line.startswith("74 ") and " sw=9000 " in line]
    assert len(unwrapped) == 1, log
    kid = re.search(r" p1=([0-9A-F]{2}) ", unwrapped[0]).group(1)
    assert any(line.startswith("E4 ") and f"data=CC{kid}" in line for line in log), log


def test_a_key_the_card_will_not_delete_is_reported_left_behind(sound):
    """The cleanup itself refused: the card will not write the PrKD of the restored key and then
    will not delete the key either (--fault prkd-write-refused --fault delete-refused). The error
    names both refusals and the key object left behind, and that is exactly what OpenSC finds
    added (one CCxx, no PrKD or certificate); deleted by hand afterwards."""
    before = sound.objects()
    sound.reinsert(("prkd-write-refused", "delete-refused"))
    err = sound.sks_fails("hsm", "restore", sound.backup, "--name", "stuck", "--subject", "CN=stuck")
    sound.reinsert()
    m = re.search(r"UPDATE BINARY of file C4([0-9A-F]{2}) .*; the new key (\d+) is not wholly removed: "
                  r"DELETE FILE CC([0-9A-F]{2}) answered SW 6982", err)
    assert m and int(m.group(1), 16) == int(m.group(2)) == int(m.group(3), 16), err
    assert sorted(set(sound.objects()) - set(before)) == [f"CC{m.group(1)}"]
    hexpin = PIN.encode().hex()
    pt.run(["opensc-tool", "--reader", "0", "-s", SELECT_HSM, "-s", f"0020008106{hexpin}",
            "-s", f"00E4020002CC{m.group(1)}"], env=sound.env)
    assert sound.objects() == before


# ---- labels over 64 bytes: refused before the card sees anything ----

def der_header(data, i=0):
    """(header length, value length) of the DER TLV at data[i]."""
    n = data[i + 1]
    if n & 0x80:
        k = n & 0x7F
        return 2 + k, int.from_bytes(data[i + 2:i + 2 + k], "big")
    return 2, n


def der_children(data):
    """The DER TLVs (whole) inside the SEQUENCE that is data."""
    h, n = der_header(data)
    out, i = [], h
    while i < h + n:
        hh, nn = der_header(data, i)
        out.append(data[i:i + hh + nn])
        i += hh + nn
    return out


def sent_during(card, request):
    """(reply, the APDUs the card logged while the driver handled request)."""
    pipe = DriverPipe(PIPE, card.dev, card.env)
    try:
        return pipe.apdus_of(card.vhsm, request)
    finally:
        pipe.close()


def generate_request(label):
    return (bytes([210]) + wire.arr(PIN.encode()) + wire.string(label) + wire.string(P256) + wire.arr(b"")
            + wire.uint(365))


def restore_request(card, label):
    """hsmUnwrapKey of the backup's three parts (the blob inside its OCTET STRING), with a
    subject for the certificate the card is to sign (so the label is not its CN)."""
    from cryptography import x509
    with open(card.backup, "rb") as f:
        blob, prkd, request = der_children(f.read())
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "restored")]).public_bytes()
    return (bytes([216]) + wire.arr(PIN.encode()) + wire.arr(blob[der_header(blob)[0]:]) + wire.arr(prkd)
            + wire.arr(request) + wire.string(label) + wire.arr(subject) + wire.uint(365))


@pytest.mark.parametrize("method", ["hsmGenerateKeyPair", "hsmUnwrapKey"])
def test_a_65_byte_label_is_refused_before_any_apdu(sound, method):
    """A SmartCard-HSM label is at most 64 bytes: one of 65 is refused by the driver, naming the
    limit, before it sends the card a single APDU (the card's log shows none), so no key is
    made; 64 bytes are taken (the key is made, OpenSC lists it by that label)."""
    make = generate_request if method == "hsmGenerateKeyPair" else (lambda label: restore_request(sound, label))
    before = sound.objects()
    reply, sent = sent_during(sound, make(LONG_LABEL))
    assert reply[0] != 0 and b"friendly name (the key's label) must be" in reply and b"64 bytes" in reply, reply
    assert sent == [], sent
    assert sound.objects() == before
    label = ("g" if method == "hsmGenerateKeyPair" else "r") * 64
    reply, sent = sent_during(sound, make(label))
    assert reply[0] == 0, reply
    assert len(sent) > 0
    assert label in sound.opensc_keys()[0]


@pytest.mark.parametrize("command", [
    ["generate", "--algorithm", "P-256", "--name"],
    ["hsm", "xkek", "generate", "--domain", "0", "--name"],
    ["hsm", "xkek", "request", "--domain", "0", "--out", "/dev/null", "--name"],
    ["hsm", "restore", "BACKUP", "--name"],
])
def test_the_command_refuses_a_65_byte_name_before_the_card_is_asked(sound, command):
    """The sks command itself checks the card's 64-byte label limit, before it lists keys, logs
    in or sends the request: the user hears why at once, the card logs no command at all (or, for
    commands that open the card first, nothing that makes or unwraps a key), its objects are as
    they were."""
    args = [sound.backup if a == "BACKUP" else a for a in command] + [LONG_LABEL]
    before, mark = sound.objects(), len(sound.vhsm.apdu_lines())
    err = sound.sks_fails(*args)
    assert "at most 64 bytes" in err and "label" in err, err
    sent = sound.vhsm.apdu_lines()[mark:]
    # 46 GENERATE ASYMMETRIC KEY PAIR, 74 UNWRAP KEY, 20 VERIFY with a PIN: none of them (a
    # VERIFY without data only asks how many tries are left)
    assert not [line for line in sent if line[:2] in ("46", "74") or (line[:2] == "20" and " lc=0 " not in line)], sent
    assert sound.objects() == before
