"""PIN and PUK tries are counted before they are answered.

* A store that cannot record a try (its filesystem full: the serving process runs under
  RLIMIT_FSIZE 0, so every write to the database fails with EFBIG) answers every guess
  ERROR_STORAGE: no guess is answered "wrong PIN", and the right PIN, after more wrong guesses
  than the retry limit, does not sign. The same for PUKs.
* Under PIN grouping, a changePin whose new PIN is compared with another group's PIN counts a
  try on that PIN: someone knowing one group's PIN cannot search another group's PIN.
* A PUK without retry limit delays every try by a second without holding the store's write
  lock: another process writes meanwhile.
"""

import resource
import signal
import subprocess
import threading
import time

import sksissuer as s
from skshelpers import expect_error, protection, sha256

DIGEST = sha256(b"pin tries")


def _no_file_growth():
    # SIGXFSZ ignored: a write past the limit then fails with EFBIG, as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


class FullDiskDevice(s.Device):
    """`sks serve --stdio` on the store, unable to write a byte to any file."""

    def __init__(self, binary, store, stderr_path):
        self.binary, self.store, self.timeout = str(binary), str(store), s.DEFAULT_TIMEOUT
        self.stderr_path = None
        self._stderr = subprocess.DEVNULL
        self.proc = subprocess.Popen([self.binary, "--store", self.store, "serve", "--stdio"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, preexec_fn=_no_file_growth)
        self.last_request = self.last_reply = self._info = None


def storage_error(fn, *args):
    try:
        fn(*args)
    except s.SksError as e:
        assert e.status == s.ERROR_STORAGE, f"answered {e} instead of a storage error"
        assert "authorization" not in e.message, f"a storage error that tells the outcome: {e}"
        return
    raise AssertionError(f"{fn.__name__} succeeded on a store that cannot record the try")


def sign(device, key, pin):
    return device.sign_hashed_data(key.handle, s.SIG_ECDSA_SHA256, DIGEST, pin)


def test_pin_guesses_on_full_disk(new_issuer, device, store, sks_binary, tmp_path):
    iss = new_issuer()
    policy = iss.create_pin_policy(retry_limit=3)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    # The fixture's device keeps the store (and its -wal, -shm) open and sized.
    protection(device, key)
    full = FullDiskDevice(sks_binary, store, tmp_path / "full.stderr")
    try:
        for guess in (b"0000", b"1111", b"2222", b"3333", b"4444"):
            storage_error(sign, full, key, guess)
        storage_error(sign, full, key, b"2580")
    finally:
        full.close()
    assert protection(device, key).pin_error_count == 0, "nothing was recorded, nothing checked"
    sign(device, key, b"2580")


def test_puk_guesses_on_full_disk(new_issuer, device, store, sks_binary, tmp_path):
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678", retry_limit=2)
    policy = iss.create_pin_policy(puk=puk, retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    iss.close()
    expect_error(sign, device, key, b"0000", codes=(s.ERROR_AUTHORIZATION,))
    assert protection(device, key).protection_status & s.PROTSTAT_PIN_BLOCKED
    full = FullDiskDevice(sks_binary, store, tmp_path / "full.stderr")
    try:
        for guess in (b"00000000", b"11111111", b"22222222", b"33333333"):
            storage_error(full.unlock_key, key.handle, guess)
            storage_error(full.set_pin, key.handle, guess, b"1470")
        storage_error(full.unlock_key, key.handle, b"12345678")
        storage_error(full.set_pin, key.handle, b"12345678", b"1470")
    finally:
        full.close()
    info = protection(device, key)
    assert info.protection_status & s.PROTSTAT_PIN_BLOCKED and info.puk_error_count == 0
    device.unlock_key(key.handle, b"12345678")
    sign(device, key, b"2580")


def test_change_pin_probe_counts_on_other_group(new_issuer, device):
    """Knowing the signature PIN, probe the standard group's PIN with changePin: every probe
    is a try on the standard PIN, so the search ends at its retry limit, before the right
    guess is told."""
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_SIGNATURE_PLUS_STANDARD, retry_limit=3)
    sig = iss.provision_key(pin_policy=policy, pin="1111", app_usage=s.APP_SIGNATURE)
    std = iss.provision_key(pin_policy=policy, pin="2222", app_usage=s.APP_AUTHENTICATION)
    iss.close()
    old = b"1111"
    for guess in (b"3333", b"4444", b"5555"):
        device.change_pin(sig.handle, old, guess)   # "differs from the other group's PIN"
        old = guess
    assert protection(device, std).pin_error_count == 3
    try:
        device.change_pin(sig.handle, old, b"2222")
    except s.SksError as e:
        assert e.status == s.ERROR_NOT_ALLOWED and "locked" in e.message, e
    else:
        raise AssertionError("changePin compared with a locked PIN")
    expect_error(sign, device, std, b"2222", codes=(s.ERROR_AUTHORIZATION,))
    sign(device, sig, old)


def test_change_pin_equal_to_other_group_counts(new_issuer, device):
    iss = new_issuer()
    policy = iss.create_pin_policy(grouping=s.GROUPING_UNIQUE, retry_limit=5)
    a = iss.provision_key(pin_policy=policy, pin="1111", app_usage=s.APP_SIGNATURE)
    b = iss.provision_key(pin_policy=policy, pin="2222", app_usage=s.APP_AUTHENTICATION)
    iss.close()
    expect_error(device.change_pin, a.handle, b"1111", b"2222", codes=(s.ERROR_OPTION,))
    assert protection(device, b).pin_error_count == 1
    assert protection(device, a).pin_error_count == 0
    sign(device, b, b"2222")
    assert protection(device, b).pin_error_count == 0


def test_puk_delay_does_not_hold_the_store(new_issuer, device, store, sks_binary, tmp_path):
    """While one process spends the second a limitless PUK's wrong try costs, another
    process's write (a wrong PIN, counted) completes."""
    iss = new_issuer()
    puk = iss.create_puk_policy("12345678", retry_limit=0)
    policy = iss.create_pin_policy(puk=puk, retry_limit=1)
    key = iss.provision_key(pin_policy=policy, pin="2580")
    other_policy = iss.create_pin_policy(retry_limit=10)
    other = iss.provision_key(pin_policy=other_policy, pin="1470")
    iss.close()
    slow = s.Device(sks_binary, store, stderr_path=tmp_path / "slow.stderr")
    done = {}

    def wrong_puk():
        try:
            slow.unlock_key(key.handle, b"00000000")
        except s.SksError as e:
            done["puk"] = e.status
        done["puk_at"] = time.monotonic()

    try:
        start = time.monotonic()
        th = threading.Thread(target=wrong_puk)
        th.start()
        time.sleep(0.3)
        expect_error(sign, device, other, b"0000", codes=(s.ERROR_AUTHORIZATION,))
        write_done = time.monotonic()
        th.join(30)
    finally:
        slow.close()
    assert done.get("puk") == s.ERROR_AUTHORIZATION
    assert done["puk_at"] - start >= 0.9, "no delay before acting on the PUK"
    assert write_done < done["puk_at"], "the write waited for the PUK delay: the lock was held"
    assert protection(device, other).pin_error_count == 1
