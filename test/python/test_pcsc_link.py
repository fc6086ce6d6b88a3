"""The PC/SC link under both card protocols: `pcsc:` finds a SmartCard-HSM or an SKS card, and a
running process gets over another application's card reset and a pulled card with either.

One private pcscd (pcscrig.py): slot 0 holds the virtual SmartCard-HSM (sks-vhsm, initialised and
given keys by OpenSC as in test_schsm.py), slot 1 the virtual SKS card (sks-vcard) with a store
of its own. The SmartCard-HSM's APDU log shows what the driver sent after a reset; OpenSSL's
default provider (through python-cryptography's verify) judges the signatures.
"""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_pcsc import RESET_CARD, Card  # noqa: E402
from test_schsm import SKS, SignLoop, hsm, run, uri, verify_ecdsa  # noqa: E402,F401  (hsm: the rig)

READER0 = "Virtual PCD 00 00"
READER1 = "Virtual PCD 00 01"
# Deadline for a daemon or card to come up or go away (a limit, not a pause). 15 s was too
# short on a loaded 2-core machine: with a benchmark running (load 7), a new virtual card
# (Python, its keys made on first start) took 12 s to appear in slot 0 and over 15 s in slot 1.
WAIT = 60


def info(env, spec):
    return run([SKS, "--device", spec, "info"], env, check=False)


def wait_until(what, probe):
    deadline = time.time() + WAIT
    while not probe():
        assert time.time() < deadline, f"no {what} after {WAIT} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mixed(hsm):  # noqa: F811
    """The SmartCard-HSM in slot 0, an SKS card in slot 1."""
    rig = hsm["rig"]
    store = rig.path("sks-card.db")
    run([SKS, "--store", store, "init"], rig.env)
    run([SKS, "--store", store, "generate", "--name", "web", "--algorithm", "P-256"], rig.env)
    card = Card(store, rig.port + 1, rig.path("sks-card.log")).insert()
    try:
        wait_until("SKS card in slot 1", lambda: info(hsm["env"], "pcsc:" + READER1).returncode == 0)
        yield dict(hsm, sks_card=card)
    finally:
        card.stop()


def card_line(res):
    out = res.stdout.decode()
    return next((line for line in out.splitlines() if line.startswith("card:")), out + res.stderr.decode())


@pytest.fixture
def hsm_in(mixed):
    """The SmartCard-HSM back in slot 0 if a test pulled it."""
    card = mixed["card"]
    if not card.running():
        card.insert()
        wait_until("SmartCard-HSM back in slot 0", lambda: info(mixed["env"], "pcsc:" + READER0).returncode == 0)
    return mixed


def test_pcsc_finds_either_kind_of_card(hsm_in):
    env = hsm_in["env"]
    assert card_line(info(env, "pcsc:")) == f'card:        SmartCard-HSM in reader "{READER0}"'
    assert card_line(info(env, "pcsc:00 01")) == f'card:        SKS card in reader "{READER1}"'
    # With the first slot empty, pcsc: passes over it to the SKS card.
    hsm_in["card"].pull()
    wait_until("fallback to slot 1", lambda: card_line(info(env, "pcsc:")).endswith(f'SKS card in reader "{READER1}"'))


def loop_on_slot0(mixed):
    return SignLoop(dict(mixed, env=dict(mixed["env"], SKS_DEVICE="pcsc:" + READER0)), uri("ec256"))


def test_smartcard_hsm_reset_by_another_application(hsm_in):
    """Another application resets the SmartCard-HSM between two signatures of a running process:
    the next signature succeeds at once, and the driver, told that the card forgot its selection
    and PIN verification, selects and verifies before it signs (it does not first send a SIGN
    that the card would refuse)."""
    card = hsm_in["card"]
    loop = loop_on_slot0(hsm_in)
    try:
        r = loop.sign("before")
        assert r.startswith("ok "), r
        run([sys.executable, "-c", RESET_CARD, READER0], hsm_in["rig"].env)
        mark = len(card.apdu_lines())
        r = loop.sign("after reset")
        assert r.startswith("ok "), r
        verify_ecdsa(hsm_in, "ec256", "after reset", r[3:])
        lines = card.apdu_lines()[mark:]
        signs = [i for i, line in enumerate(lines) if line.startswith("68 ")]
        verifies = [i for i, line in enumerate(lines) if line.startswith("20 ") and "lc=6 " in line]
        assert lines[0].startswith("A4 ") and "sw=9000" in lines[0], lines
        assert len(signs) == 1 and "sw=9000" in lines[signs[0]], lines
        assert len(verifies) == 1 and verifies[0] < signs[0] and "sw=9000" in lines[verifies[0]], lines
    finally:
        loop.close()


def test_smartcard_hsm_pulled_then_returned(hsm_in):
    """The SmartCard-HSM is pulled under a running process: the next signature fails naming the
    reader; once the card is back, the same process signs again (PIN verified anew)."""
    card = hsm_in["card"]
    loop = loop_on_slot0(hsm_in)
    try:
        assert loop.sign("before").startswith("ok ")
        card.pull()
        r = loop.sign("pulled")
        assert r.startswith("error ") and f'reader "{READER0}"' in r, r
        assert "card removed" in r or "no card in reader" in r or "not answering" in r, r
        card.insert()
        mark = len(card.apdu_lines())
        deadline = time.time() + WAIT
        while True:
            r = loop.sign("returned")
            if r.startswith("ok "):
                break
            assert time.time() < deadline, f"the same process did not recover: {r}"
            time.sleep(0.2)
        verify_ecdsa(hsm_in, "ec256", "returned", r[3:])
        assert any(line.startswith("20 ") and "lc=6 " in line for line in card.apdu_lines()[mark:])
    finally:
        loop.close()
