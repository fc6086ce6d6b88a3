"""Crash consistency: kill the device at random points while it closes provisioning sessions
that create several keys; the store always opens cleanly and holds each session whole or not
at all.

One store serves every trial. A trial starts its own `sks serve --stdio`, provisions 3-4 P-256
keys (one PIN protected, one with a plain and an encrypted extension), sometimes queues a
postDeleteKey of a key of an earlier closed session, then sends closeProvisioningSession and
SIGKILLs the device after a random delay (0 to 4 times the close latency measured first), so
kills land before, during and after the commit. About one trial in seven is killed during
another provisioning call instead (createProvisioningSession ... postDeleteKey).

After every kill the issuer checks, with its own record of which trial created which
serverSessionId:

* `PRAGMA integrity_check` (Python's sqlite3, read-only, before the device touches the file)
  says "ok", and a fresh device opens the store;
* the closed sessions and the keys enumerateKeys lists are exactly those of the issuer's model
  (a trial's keys, plus the keys its postDeleteKey adopted from the target's session, minus the
  deleted target): a session is whole or absent, never partly there;
* every key of the trial (when its session closed) has its certificate path, extensions and
  PIN and signs verifiably; a trial whose session is still open has none of its keys usable,
  and its postDeleteKey target is untouched;
* every other still-open session that was killed during the close is resumed: re-sending the
  same closeProvisioningSession (same MAC counter) from a new device process succeeds, which it
  can only if the killed close left nothing behind.

SKS_CRASH_TRIALS (default 200) and SKS_CRASH_SEED (default random, printed) tune the run.
"""

import os
import random
import signal
import sqlite3
import struct
import time

from cryptography.hazmat.primitives.asymmetric import ec

import sksissuer as s
from skshelpers import expect_error, sign_and_verify

TRIALS = int(os.environ.get("SKS_CRASH_TRIALS", "200"))
EXT_PLAIN = "https://example.com/sks/crash#plain"
EXT_SECRET = "https://example.com/sks/crash#secret"
PIN = b"2580"


class Killed(Exception):
    """The device was SIGKILLed while a request was in flight."""


class KillableDevice(s.Device):
    """A Device that can be SIGKILLed a chosen time after sending a chosen request."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.kill_plan = None        # (requests to let through, delay in seconds)
        self.killed_during = None    # method id of the request in flight at the kill

    def arm(self, skip, delay):
        self.kill_plan = [skip, delay]

    def transact(self, request):
        if self.kill_plan is not None:
            if self.kill_plan[0] > 0:
                self.kill_plan[0] -= 1
            else:
                delay = self.kill_plan[1]
                self.kill_plan = None
                self.killed_during = request[0]
                self.proc.stdin.write(struct.pack(">I", len(request)) + bytes(request))
                self.proc.stdin.flush()
                # Busy-wait: time.sleep cannot resolve the sub-millisecond delays.
                deadline = time.perf_counter() + delay
                while time.perf_counter() < deadline:
                    pass
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                raise Killed()
        return super().transact(request)

    def close(self):
        super().close()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def integrity_check(db):
    """PRAGMA integrity_check through a read-only connection of Python's sqlite3 module."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


class Model:
    """The issuer's record of the store: what each trial created and where each key lives."""

    def __init__(self):
        self.trials = []             # every Trial, in order
        self.closed = {}             # serverSessionId -> set of key handles
        self.owner = {}              # key handle of a closed session -> serverSessionId
        self.entries = {}            # key handle -> sksissuer.KeyEntry
        self.open = {}               # serverSessionId -> Trial (session still open)
        self.reserved = set()        # targets of post operations of open sessions

    def close_session(self, trial):
        """Applies a successful closeProvisioningSession of trial."""
        ssid = trial.issuer.server_session_id
        keys = {k.handle for k in trial.keys}
        for k in trial.keys:
            self.entries[k.handle] = k
            self.owner[k.handle] = ssid
        if trial.target is not None:
            t = trial.target.handle
            donor = self.owner.pop(t)
            self.closed[donor].discard(t)
            del self.entries[t]
            # closeProvisioningSession adopts the target's session: its other keys move here
            # and the emptied session goes.
            for h in self.closed.pop(donor):
                self.owner[h] = ssid
                keys.add(h)
        self.closed[ssid] = keys
        self.open.pop(ssid, None)
        if trial.target is not None:
            self.reserved.discard(trial.target.handle)

    def pick_target(self, rng):
        candidates = sorted(h for h in self.owner if h not in self.reserved)
        return self.entries[rng.choice(candidates)] if candidates else None


class Trial:
    def __init__(self, index, mode, delay, n_keys):
        self.index = index
        self.mode = mode             # "close" | "mid"
        self.delay = delay
        self.n_keys = n_keys
        self.issuer = None
        self.handle = None           # provisioningHandle as enumerated after the kill
        self.keys = []
        self.target = None
        self.pre_close_counter = None
        self.outcome = None          # "closed" | "open" | "absent" | "resumed"

    def __repr__(self):
        ssid = self.issuer.server_session_id if self.issuer else "?"
        return (f"trial {self.index} ({self.mode}, kill after {self.delay * 1e3:.3f} ms, "
                f"{self.n_keys} keys, serverSessionId {ssid}, post-delete "
                f"{self.target.handle if self.target else None})")


def provision(iss, trial):
    """The trial's provisioning calls (the same for killed and calibration sessions)."""
    policy = iss.create_pin_policy(retry_limit=3)
    for i in range(trial.n_keys):
        kw = {"pin_policy": policy, "pin": PIN} if i == 0 else {}
        key = iss.provision_key(s.KEY_EC_P256, friendly_name=f"crash {trial.index}.{i}", **kw)
        trial.keys.append(key)
        if i == 1:
            iss.add_extension(key, EXT_PLAIN, s.SUB_TYPE_EXTENSION, f"t{trial.index}".encode())
            iss.add_extension(key, EXT_SECRET, s.SUB_TYPE_ENCRYPTED_EXTENSION,
                              os.urandom(24))
    if trial.target is not None:
        iss.post_delete_key(trial.target)


def check_key_whole(dev, key, ctx):
    attrs = dev.get_key_attributes(key.handle)
    assert attrs.certificate_path == key.certificate_path, f"{ctx}: key {key.handle} path"
    assert attrs.friendly_name == key.friendly_name, f"{ctx}: key {key.handle} friendlyName"
    assert sorted(attrs.extension_types) == sorted(key.extensions), \
        f"{ctx}: key {key.handle} extensions {attrs.extension_types}"
    for type_, (sub_type, qualifier, data) in key.extensions.items():
        ext = dev.get_extension(key.handle, type_)
        assert (ext.sub_type, ext.qualifier, ext.extension_data) == (sub_type, qualifier, data), \
            f"{ctx}: key {key.handle} extension {type_}"
    if key.pin_policy is not None:
        info = dev.get_key_protection_info(key.handle)
        assert info.protection_status & s.PROTSTAT_PIN_PROTECTED, f"{ctx}: PIN lost"
        assert info.retry_limit == key.pin_policy.retry_limit
    sign_and_verify(dev, key)


def check_store(dev, model, ctx):
    """The closed sessions and enumerated keys are exactly the model's; open sessions are
    exactly the ones the model has open (plus none)."""
    closed = {x.server_session_id: x.provisioning_handle for x in dev.list_sessions(False)}
    assert set(closed) == set(model.closed), (
        f"{ctx}: closed sessions differ from the issuer's record: unexpected "
        f"{sorted(set(closed) - set(model.closed))}, missing "
        f"{sorted(set(model.closed) - set(closed))}")
    open_now = {x.server_session_id for x in dev.list_sessions(True)}
    assert open_now == set(model.open), (
        f"{ctx}: open sessions differ: unexpected {sorted(open_now - set(model.open))}, "
        f"missing {sorted(set(model.open) - open_now)}")
    listed = dev.list_keys()
    want = {h: closed[ssid] for ssid, keys in model.closed.items() for h in keys}
    extra = {h: p for h, p in listed.items() if h not in want}
    missing = {h: p for h, p in want.items() if h not in listed}
    moved = {h: (listed[h], want[h]) for h in want if h in listed and listed[h] != want[h]}
    assert not (extra or missing or moved), (
        f"{ctx}: enumerateKeys differs from the issuer's record: extra {extra} (keys of open "
        f"or unknown sessions), missing {missing}, in the wrong session {moved}")


def check_open_trial(dev, trial, ctx):
    """A still-open session: none of its keys usable, its post-delete target untouched."""
    for key in trial.keys:
        expect_error(dev.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, b"\x01" * 32, PIN
                     if key.pin_policy else b"", codes=(s.ERROR_NO_KEY,))
    if trial.target is not None:
        check_key_whole(dev, trial.target, f"{ctx}: post-delete target of an open session")


def test_kill_during_close(sks_binary, store, ca, tmp_path):
    seed = int(os.environ.get("SKS_CRASH_SEED", str(random.SystemRandom().randrange(2**32))))
    rng = random.Random(seed)
    print(f"\nSKS_CRASH_SEED={seed} SKS_CRASH_TRIALS={TRIALS}")
    kmk = ec.generate_private_key(ec.SECP256R1())
    model = Model()
    stderr = tmp_path / "device.stderr"

    def device():
        return KillableDevice(sks_binary, store, stderr_path=stderr)

    # Calibration: how long a close takes here, from request sent to reply read. These
    # sessions also give the first trials post-delete targets.
    latencies = []
    for i in range(5):
        dev = device()
        trial = Trial(-1 - i, "calibration", 0.0, 3)
        trial.issuer = s.Issuer(dev, ca=ca, kmk=kmk).open()
        provision(trial.issuer, trial)
        t0 = time.perf_counter()
        trial.issuer.close()
        latencies.append(time.perf_counter() - t0)
        dev.close()
        model.close_session(trial)
    close_latency = sorted(latencies)[len(latencies) // 2]
    print(f"closeProvisioningSession latency: {close_latency * 1e3:.2f} ms (median of 5)")

    outcomes = {"close": {}, "mid": {}}
    for index in range(TRIALS):
        mode = "mid" if rng.random() < 0.15 else "close"
        r = rng.random()
        if r < 0.1:
            delay = 0.0
        elif r < 0.2:
            delay = close_latency * rng.uniform(2.5, 4.0)     # surely after the commit
        else:
            delay = close_latency * rng.uniform(0.0, 2.5)
        trial = Trial(index, mode, delay, rng.choice((3, 4)))
        if rng.random() < 0.3:
            trial.target = model.pick_target(rng)
        model.trials.append(trial)

        dev = device()
        trial.issuer = iss = s.Issuer(dev, ca=ca, kmk=kmk)
        ctx = repr(trial) + f" [SKS_CRASH_SEED={seed}]"
        # Calls of a trial: getDeviceInfo, createProvisioningSession, createPinPolicy,
        # 2 per key, 2 extensions, [postDeleteKey], close. "mid" kills one of calls 1..n-1.
        n_calls = 3 + 2 * trial.n_keys + 2 + (1 if trial.target else 0)
        if mode == "mid":
            dev.arm(rng.randrange(1, n_calls), delay)
        try:
            iss.open()
            provision(iss, trial)
            trial.pre_close_counter = iss.counter
            dev.arm(0, delay)
            iss.close()
            raise AssertionError(f"{ctx}: the device was not killed")
        except Killed:
            pass
        finally:
            dev.close()
        killed_method = dev.killed_during
        if trial.target is not None:
            model.reserved.add(trial.target.handle)

        # The file as the crash left it.
        result = integrity_check(store)
        assert result == ["ok"], f"{ctx}: PRAGMA integrity_check: {result}"

        dev = device()
        try:
            dev.get_device_info()
            ssid = iss.server_session_id
            state = None
            for is_open in (True, False):
                for x in dev.list_sessions(is_open):
                    if x.server_session_id == ssid:
                        state, trial.handle = is_open, x.provisioning_handle
            if state is False:
                trial.outcome = "closed"
                assert mode == "close", f"{ctx}: a session that never sent its close is closed"
                model.close_session(trial)
            elif state is True:
                trial.outcome = "open"
                model.open[ssid] = trial
            else:
                trial.outcome = "absent"
                assert mode == "mid" and killed_method == 2, (
                    f"{ctx}: the session vanished (killed during method {killed_method})")
            outcomes[mode].setdefault(trial.outcome, []).append(delay)

            check_store(dev, model, ctx)
            if trial.outcome == "closed":
                # The trial's keys and any it adopted through its post-delete target's session.
                for h in sorted(model.closed[ssid]):
                    check_key_whole(dev, model.entries[h], ctx)
                if trial.target is not None:
                    assert trial.target.handle not in model.entries
                    expect_error(dev.get_key_attributes, trial.target.handle,
                                 codes=(s.ERROR_NO_KEY,))
            elif trial.outcome == "open":
                check_open_trial(dev, trial, ctx)

            # Resume every other session killed during its close: the same close (same MAC
            # counter) must now succeed, as the killed one left nothing behind.
            if trial.outcome == "open" and mode == "close" and index % 2 == 0:
                iss.device = dev
                iss.counter = trial.pre_close_counter
                try:
                    iss.close()
                except s.SksError as e:
                    raise AssertionError(f"{ctx}: re-sending the killed close failed, so the "
                                         f"kill left part of it in the store: {e}") from e
                trial.outcome = "resumed"
                model.close_session(trial)
                check_store(dev, model, ctx + " after the resumed close")
                for h in sorted(model.closed[ssid]):
                    check_key_whole(dev, model.entries[h], ctx + " after the resumed close")
        finally:
            dev.close()

    summary = {m: {o: len(v) for o, v in d.items()} for m, d in outcomes.items()}
    print(f"outcomes: {summary}")
    print("killed closes by delay (in units of the close latency): took effect / did not")
    for lo in (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        def n(o):
            return sum(lo <= d / close_latency < lo + 0.5 for d in outcomes["close"].get(o, []))
        print(f"  {lo:.1f}-{lo + 0.5:.1f}: {n('closed'):3d} / {n('open'):3d}")

    # Kills landed on both sides of the commit: some closes took effect, some did not.
    assert outcomes["close"].get("closed"), f"no killed close took effect: {summary}"
    assert outcomes["close"].get("open"), f"every killed close took effect: {summary}"

    # The end state: every key of every closed session works; aborting the open sessions
    # leaves exactly the closed ones.
    dev = device()
    try:
        check_store(dev, model, "final state")
        for h, key in sorted(model.entries.items()):
            check_key_whole(dev, key, f"final state, key {h}")
        aborted = [trial for _, trial in sorted(model.open.items())]
        for trial in aborted:
            dev.abort_provisioning_session(trial.handle)
        model.open = {}
        check_store(dev, model, "after aborting the open sessions")
        for trial in aborted:
            for key in trial.keys:
                expect_error(dev.get_key_attributes, key.handle, codes=(s.ERROR_NO_KEY,))
    finally:
        dev.close()
    assert integrity_check(store) == ["ok"]
