"""Four processes presenting wrong PINs to one key at once never exceed its retry limit.

Each round provisions a fresh PIN-protected key on one store, then starts four OS processes
(multiprocessing, fork), each with its own `sks serve --stdio` on that same store. They meet at
a barrier and then fire signHashedData calls as fast as they can. Every reply is classified:

* ok             - the signature (checked against the public key);
* wrong          - ERROR_AUTHORIZATION '"authorization" error for key #N';
* wrong+locking  - the same, ending "(the key is now locked)": the guess that hit the limit;
* locked         - ERROR_AUTHORIZATION 'key #N is locked: PIN retry limit ... reached';

and anything else (ERROR_STORAGE from a lock the device failed to wait for, above all) fails
the test.

With wrong PINs only, exactly retryLimit replies may say "wrong" (the last of them locking),
getKeyProtectionInfo then reports pinErrorCount == retryLimit and PIN_BLOCKED, and the right
PIN is refused as locked. With one process presenting the right PIN between the others' wrong
ones, the counter resets; the replies and the final counter must then be explained by some
sequential order of all calls that keeps each process's own order (checked exactly, below).
"""

import multiprocessing
import random
import time
import traceback

import pytest

import sksissuer as s
from skshelpers import expect_error, sha256

PIN = b"4711"
WRONG = b"0000"
DATA = sha256(b"sks PIN concurrency")
WORKERS = 4
MP = multiprocessing.get_context("fork")

OK, WRONG_PIN, WRONG_LOCKING, LOCKED = "ok", "wrong", "wrong+locking", "locked"


def classify(exc):
    """A reply of signHashedData as one of the outcomes above, or a description of an error
    that no outcome allows."""
    if exc.status == s.ERROR_AUTHORIZATION:
        if '"authorization" error' in exc.message:
            return WRONG_LOCKING if "now locked" in exc.message else WRONG_PIN
        if "is locked" in exc.message:
            return LOCKED
    return f"unexpected {s.STATUS_NAMES.get(exc.status, exc.status)}: {exc.message}"


def worker(binary, store, handles, plan, jitter, barrier, results, index):
    """One process: its own device, then signHashedData with each PIN of `plan` in turn,
    round robin over `handles` (keys sharing one PIN object). jitter > 0: a random pause of up
    to that many seconds before each call, so that the processes' calls interleave more than
    SQLite's busy handler lets them when everyone goes flat out."""
    out = []
    rng = random.Random()
    try:
        dev = s.Device(binary, store)
        try:
            dev.get_device_info()        # the device is up before the race starts
            barrier.wait(timeout=60)
            for i, pin in enumerate(plan):
                handle = handles[(i + index) % len(handles)]
                if jitter:
                    time.sleep(rng.uniform(0, jitter))
                try:
                    sig = dev.sign_hashed_data(handle, s.SIG_ECDSA_SHA256, DATA, pin)
                    out.append((pin == PIN, OK, handle, sig))
                except s.SksError as e:
                    out.append((pin == PIN, classify(e), handle, None))
        finally:
            dev.close()
        results.put((index, out, None))
    except BaseException:          # report, never hang the parent
        results.put((index, out, traceback.format_exc()))


def race(sks_binary, store, handles, plans, jitter=0.0):
    """Runs one process per plan at once; returns each process's [(right PIN?, outcome,
    handle, signature)] in its own call order. jitter: seconds, or one value per process."""
    jitters = list(jitter) if isinstance(jitter, (list, tuple)) else [jitter] * len(plans)
    barrier = MP.Barrier(len(plans))
    results = MP.Queue()
    procs = [MP.Process(target=worker, args=(sks_binary, str(store), handles, plan, jitters[i],
                                             barrier, results, i))
             for i, plan in enumerate(plans)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in procs:
            index, out, error = results.get(timeout=300)
            assert error is None, f"worker {index} failed:\n{error}"
            got[index] = out
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    return [got[i] for i in range(len(plans))]


def provision(device, ca, retry_limit, n_keys=1):
    """A fresh PIN-protected P-256 key (or n_keys sharing one PIN object)."""
    iss = s.Issuer(device, ca=ca).open()
    grouping = s.GROUPING_SHARED if n_keys > 1 else s.GROUPING_NONE
    policy = iss.create_pin_policy(retry_limit=retry_limit, grouping=grouping)
    keys = [iss.provision_key(s.KEY_EC_P256, pin_policy=policy, pin=PIN)
            for _ in range(n_keys)]
    iss.close()
    for key in keys:
        info = device.get_key_protection_info(key.handle)
        assert info.retry_limit == retry_limit and info.pin_error_count == 0
    return keys


def check_replies(sequences, keys):
    """Every reply is one of the allowed outcomes; successful signatures verify."""
    by_handle = {k.handle: k for k in keys}
    for i, seq in enumerate(sequences):
        for n, (right, outcome, handle, sig) in enumerate(seq):
            assert outcome in (OK, WRONG_PIN, WRONG_LOCKING, LOCKED), \
                f"process {i}, call {n}: {outcome}"
            if outcome == OK:
                assert right, f"process {i}, call {n}: a wrong PIN was accepted"
                s.verify_signature(by_handle[handle].public_key, s.SIG_ECDSA_SHA256, DATA, sig)
            if outcome in (WRONG_PIN, WRONG_LOCKING):
                assert not right, f"process {i}, call {n}: the right PIN was called wrong"


def counts(sequences):
    c = {OK: 0, WRONG_PIN: 0, WRONG_LOCKING: 0, LOCKED: 0}
    for seq in sequences:
        for _, outcome, _, _ in seq:
            c[outcome] += 1
    return c


def assert_locked(device, keys, retry_limit):
    for key in keys:
        info = device.get_key_protection_info(key.handle)
        assert info.pin_error_count == retry_limit, (
            f"key {key.handle}: pinErrorCount {info.pin_error_count}, retryLimit {retry_limit}")
        assert info.protection_status & s.PROTSTAT_PIN_BLOCKED, \
            f"key {key.handle}: PIN_BLOCKED not set ({info.protection_status:#x})"
        e = expect_error(device.sign_hashed_data, key.handle, s.SIG_ECDSA_SHA256, DATA, PIN,
                         codes=(s.ERROR_AUTHORIZATION,))
        assert classify(e) == LOCKED, f"the right PIN after the lock-out: {e.message}"


ROUNDS = [  # retryLimit, keys sharing the PIN object, jitter (s)
    (5, 1, 0.0), (5, 1, 0.0), (5, 1, 0.002), (10, 1, 0.0), (10, 1, 0.002), (20, 1, 0.001),
    (5, 2, 0.0), (10, 2, 0.002),
]


@pytest.mark.parametrize("retry_limit,n_keys,jitter", ROUNDS,
                         ids=[f"limit{l}-keys{k}-{'jitter' if j else 'flat-out'}-{i}"
                              for i, (l, k, j) in enumerate(ROUNDS)])
def test_wrong_pins_never_exceed_retry_limit(sks_binary, store, device, ca, retry_limit,
                                             n_keys, jitter):
    """Each round a fresh key (or two keys sharing one PIN object under grouping "shared")."""
    keys = provision(device, ca, retry_limit, n_keys)
    handles = [k.handle for k in keys]
    calls = 2 * retry_limit + 10
    seqs = race(sks_binary, store, handles, [[WRONG] * calls] * WORKERS, jitter)
    check_replies(seqs, keys)
    c = counts(seqs)
    summary = f"replies {c}, per process {[counts([q]) for q in seqs]}"
    assert c[WRONG_PIN] + c[WRONG_LOCKING] == retry_limit, (
        f"{c[WRONG_PIN] + c[WRONG_LOCKING]} wrong-PIN replies for retryLimit {retry_limit}: "
        f"{summary}")
    assert c[WRONG_LOCKING] == 1, f"exactly one guess must lock the key: {summary}"
    assert c[LOCKED] == WORKERS * calls - retry_limit
    # Each process: its wrong-PIN replies, then only "locked" (the lock never lifts).
    for i, seq in enumerate(seqs):
        outcomes = [o for _, o, _, _ in seq]
        first_locked = outcomes.index(LOCKED)
        assert set(outcomes[first_locked:]) == {LOCKED}, f"process {i}: {outcomes}"
    assert_locked(device, keys, retry_limit)


def sequentially_consistent(sequences, retry_limit, final_count):
    """Is there one sequential order of all calls, keeping each process's order, in which a
    PIN object with this retry limit gives exactly these replies and ends at final_count?

    The device's rule, call by call, with c the error count (locked when c >= limit):
      right PIN: c < limit -> ok, c = 0;          else locked
      wrong PIN: c + 1 < limit -> wrong, c += 1; c + 1 == limit -> wrong+locking, c = limit;
                 else locked.
    Processes that only ever present wrong PINs are interchangeable: their wrong replies form
    a pool that can go anywhere, and their "locked" replies (the lock never lifts) fit at the
    end exactly when the final state is locked. Their own orders must be: non-locked replies,
    then only "locked"."""
    mixed = [seq for seq in sequences if any(right for right, _, _, _ in seq)]
    assert len(mixed) <= 1, "the check handles one process with right PINs"
    pool = [seq for seq in sequences if not any(seq is m for m in mixed)]
    a = b = pool_locked = 0
    for seq in pool:
        outcomes = [o for _, o, _, _ in seq]
        k = outcomes.index(LOCKED) if LOCKED in outcomes else len(outcomes)
        if set(outcomes[k:]) - {LOCKED} or WRONG_LOCKING in outcomes[:k][:-1]:
            return False
        a += outcomes[:k].count(WRONG_PIN)
        b += outcomes[:k].count(WRONG_LOCKING)
        pool_locked += len(outcomes) - k
    ops = [(right, o) for right, o, _, _ in (mixed[0] if mixed else [])]
    limit = retry_limit
    states = {(0, 0, 0, 0)}          # (calls of the mixed process done, pool wrong, pool
    seen = set(states)               #  wrong+locking, error count)
    while states:
        nxt = set()
        for i, ua, ub, c in states:
            cand = []
            if i < len(ops):
                right, o = ops[i]
                if o == LOCKED and c >= limit:
                    cand.append((i + 1, ua, ub, c))
                elif right and o == OK and c < limit:
                    cand.append((i + 1, ua, ub, 0))
                elif not right and o == WRONG_PIN and c + 1 < limit:
                    cand.append((i + 1, ua, ub, c + 1))
                elif not right and o == WRONG_LOCKING and c + 1 == limit:
                    cand.append((i + 1, ua, ub, limit))
            if ua < a and c + 1 < limit:
                cand.append((i, ua + 1, ub, c + 1))
            if ub < b and c + 1 == limit:
                cand.append((i, ua, ub + 1, limit))
            for st in cand:
                if st not in seen:
                    seen.add(st)
                    nxt.add(st)
        states = nxt
    return any(st == (len(ops), a, b, final_count) and (pool_locked == 0 or final_count >= limit)
               for st in seen)


def test_consistency_check_rejects_impossible_histories():
    """The checker itself: it accepts a possible history and rejects impossible ones."""
    w, wl, lk, ok = WRONG_PIN, WRONG_LOCKING, LOCKED, OK

    def seq(*items):
        return [(right, o, 1, None) for right, o in items]

    mixed = seq((True, ok), (False, w), (True, ok))
    pool = [seq((False, w), (False, w), (False, w)), seq((False, w), (False, wl), (False, lk))]
    assert sequentially_consistent([mixed] + pool, 3, 3)
    assert not sequentially_consistent([mixed] + pool, 3, 2), "wrong final count"
    # Five wrong replies and no reset between them: impossible with limit 3.
    assert not sequentially_consistent([seq((True, ok))] + [seq(*[(False, w)] * 5)], 3, 2)
    # ... but possible when the right PIN comes twice in between.
    assert sequentially_consistent([seq((True, ok), (True, ok))]
                                   + [seq(*[(False, w)] * 5)], 3, 1)
    # "locked" before the lock.
    assert not sequentially_consistent([seq((True, lk), (True, ok))], 3, 0)
    # A pool process that sees "locked" and then a wrong reply.
    assert not sequentially_consistent([seq((True, ok)), seq((False, lk), (False, w))], 3, 1)


@pytest.mark.parametrize("every", [1, 2], ids=["right-pin-every-call", "right-pin-every-2nd"])
@pytest.mark.parametrize("retry_limit", [3, 5, 10])
def test_right_pin_interleaved(sks_binary, store, device, ca, retry_limit, every):
    """One process presents the right PIN (every call, or every second call between wrong
    ones) flat out while three present wrong ones with short pauses: the counter resets (often
    many times before the key locks, if it does), and the replies and the final counter fit
    a sequential order."""
    keys = provision(device, ca, retry_limit)
    calls = 4 * retry_limit + 10
    mixed_plan = [PIN if n % every == 0 else WRONG for n in range(calls)]
    plans = [mixed_plan] + [[WRONG] * calls] * (WORKERS - 1)
    seqs = race(sks_binary, store, [k.handle for k in keys], plans,
                jitter=[0.0] + [0.003] * (WORKERS - 1))
    check_replies(seqs, keys)
    info = device.get_key_protection_info(keys[0].handle)
    blocked = bool(info.protection_status & s.PROTSTAT_PIN_BLOCKED)
    c = counts(seqs)
    summary = (f"replies {c}, final pinErrorCount {info.pin_error_count}, blocked {blocked}; "
               f"process 0: {[o for _, o, _, _ in seqs[0]]}")
    assert sequentially_consistent(seqs, retry_limit, info.pin_error_count), \
        f"no sequential order explains the replies: {summary}"
    assert info.pin_error_count <= retry_limit, summary
    assert blocked == (info.pin_error_count == retry_limit), summary
    assert c[WRONG_LOCKING] == (1 if blocked else 0), summary
    if blocked:
        assert_locked(device, keys, retry_limit)
    else:
        sig = device.sign_hashed_data(keys[0].handle, s.SIG_ECDSA_SHA256, DATA, PIN)
        s.verify_signature(keys[0].public_key, s.SIG_ECDSA_SHA256, DATA, sig)
        assert device.get_key_protection_info(keys[0].handle).pin_error_count == 0
