"""A private pcscd with the vpcd reader driver, and virtual cards in its slots, for tests.

pcscd runs in the foreground on a socket we bind and hand over by socket activation
(LISTEN_FDS); clients find it through PCSCLITE_CSOCK_NAME (see `env`). Its reader configuration
is a directory of ours with vpcd on a free port pair, so a system pcscd is left alone. vpcd
offers two slots: "Virtual PCD 00 00" on port P and "Virtual PCD 00 01" on P+1. pcscd logs every
APDU (-a).

    with PcscRig() as rig:
        card = rig.vhsm(slot=0)             # sks-vhsm with a fresh state file in slot 0
        rig.wait_for_atr(0)
        subprocess.run(["pkcs11-tool", ...], env=rig.env)
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PCSCD = shutil.which("pcscd") or "/usr/sbin/pcscd"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
HERE = os.path.dirname(os.path.abspath(__file__))
VHSM = os.path.normpath(os.path.join(HERE, "..", "..", "tools", "sks-vhsm", "sks-vhsm"))
# Deadline for a daemon or card to come up or go away (a limit, not a pause). 15 s was too
# short on a loaded 2-core machine: with a benchmark running (load 7), a new virtual card
# (Python, its keys made on first start) took 12 s to appear in slot 0 and over 15 s in slot 1.
WAIT = 60
SELECT_HSM = "00A4040C0BE82B0601040181C31F0201"


def free_port_pair():
    """A port P with P+1 free too: vpcd listens on one port per slot."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no free pair of TCP ports")


def stop_process(proc, sig=signal.SIGTERM):
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Pcscd:
    """pcscd in the foreground on a socket we bind, reading only our reader configuration."""

    def __init__(self, base, port):
        self.sock_path = os.path.join(base, "pcscd.comm")
        self.log = os.path.join(base, "pcscd.log")
        self.conf = os.path.join(base, "reader.conf.d")
        os.makedirs(self.conf, exist_ok=True)
        with open(os.path.join(self.conf, "vpcd"), "w") as f:
            f.write(f'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:{port}\nLIBPATH {VPCD_DRIVER}\n'
                    f"CHANNELID {port}\n")
        self.proc = None
        self.logf = None

    def start(self):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.sock_path)
        listener.listen(64)
        fd = listener.fileno()
        self.logf = open(self.log, "ab")
        # Socket activation: the socket on fd 3, LISTEN_PID naming pcscd itself (sh execs it).
        self.proc = subprocess.Popen(
            ["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; '
                         f'exec "{PCSCD}" -f -i -a -c "{self.conf}"'],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT, preexec_fn=lambda: os.dup2(fd, 3), pass_fds=(3,))
        listener.close()
        deadline = time.time() + WAIT
        while "daemon ready" not in self.log_text():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise AssertionError(f"pcscd did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def stop(self):
        stop_process(self.proc)
        if self.logf:
            self.logf.close()
            self.logf = None

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def log_size(self):
        return os.path.getsize(self.log)

    def apdus_since(self, offset):
        """The command APDUs pcscd logged after offset, as hex strings."""
        with open(self.log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return [line.split("APDU: ", 1)[1].strip() for line in text.splitlines() if "APDU: " in line]


class VirtualHsm:
    """sks-vhsm in one vpcd slot. pull() stops it like a card taken out; insert() puts the same
    card (same state file) back."""

    def __init__(self, port, state, apdu_log, stderr_log, fault=None, fault_after=0):
        self.fault = fault
        self.fault_after = fault_after
        self.port = port
        self.state = state
        self.apdu_log = apdu_log
        self.stderr_log = stderr_log
        self.proc = None

    def insert(self):
        self.logf = open(self.stderr_log, "ab")
        self.proc = subprocess.Popen([VHSM, "--port", str(self.port), "--state", self.state,
                                      "--apdu-log", self.apdu_log]
                                     + [arg for f in self.faults() for arg in ("--fault", f)]
                                     + (["--fault-after", str(self.fault_after)] if self.fault else []),
                                     stdout=subprocess.DEVNULL, stderr=self.logf)
        return self

    def faults(self):
        """fault is one sks-vhsm --fault name, or a tuple of them."""
        if not self.fault:
            return ()
        return (self.fault,) if isinstance(self.fault, str) else tuple(self.fault)

    def pull(self, sig=signal.SIGKILL):
        stop_process(self.proc, sig)
        self.logf.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def apdu_lines(self):
        if not os.path.exists(self.apdu_log):
            return []
        with open(self.apdu_log) as f:
            return f.read().splitlines()

    def count(self, ins, since=0):
        """How many command APDUs with this INS (e.g. 0x68 SIGN) the card answered, counting
        from line `since` of its APDU log."""
        return sum(1 for line in self.apdu_lines()[since:] if line.startswith(f"{ins:02X} "))

    def export_root(self, path):
        subprocess.run([VHSM, "--state", self.state, "--export-root", path, "--export-only"], check=True)


class PcscRig:
    """pcscd + vpcd on a free port pair in a temporary directory."""

    def __init__(self, base=None):
        self.own_base = base is None          # a directory of our own is removed at stop()
        self.base = base or tempfile.mkdtemp(prefix="sks-pcscrig-")
        self.port = free_port_pair()
        self.pcscd = Pcscd(self.base, self.port)
        self.cards = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENSSL_", "SKS_", "PCSCLITE_", "OPENSC_"))}
        self.plain_env = dict(env)
        env["PCSCLITE_CSOCK_NAME"] = self.pcscd.sock_path
        # OpenSC without a file cache and without a user's opensc.conf surprises.
        env["OPENSC_CONF"] = os.path.join(self.base, "opensc.conf")
        with open(env["OPENSC_CONF"], "w") as f:
            f.write("app default {\n  framework pkcs15 {\n    use_file_caching = no;\n  }\n}\n")
        self.env = env

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        if not os.path.exists(PCSCD) or not os.path.exists(VPCD_DRIVER):
            raise AssertionError("pcscd or vpcd is missing: scripts/install-deps.sh installs pcscd and vsmartcard-vpcd")
        self.pcscd.start()
        return self

    def stop(self):
        for c in self.cards.values():
            if c.running():
                c.pull(signal.SIGTERM)
        self.pcscd.stop()
        if self.own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.base, name)

    def vhsm(self, slot=0, state=None, fault=None, fault_after=0):
        """Inserts sks-vhsm into `slot` (0 or 1); state defaults to card<slot>.json in the rig;
        fault makes it misbehave (sks-vhsm --fault, after fault_after commands: --fault-after)."""
        state = state or self.path(f"card{slot}.json")
        card = VirtualHsm(self.port + slot, state, self.path(f"card{slot}.apdu.log"), self.path(f"card{slot}.err"),
                          fault, fault_after)
        self.cards[slot] = card
        return card.insert()

    def reinsert(self, slot, state=None, fault=None, fault_after=0):
        """Pulls the card in `slot` and inserts sks-vhsm with `state` (default: the same file)
        and `fault` (sks-vhsm --fault, --fault-after; default: none, so a faulty card comes
        back sound)."""
        old = self.cards[slot]
        old.pull()
        self.wait_for_card(slot, present=False)
        if (state is None or state == old.state) and (fault, fault_after) == (old.fault, old.fault_after):
            self.cards[slot] = old.insert()
        else:
            self.vhsm(slot, state=state or old.state, fault=fault, fault_after=fault_after)
        self.wait_for_card(slot)
        return self.cards[slot]

    def reader(self, slot):
        return READERS[slot]

    def wait_for_card(self, slot, present=True):
        """Waits until a card in `slot` answers SELECT of the SmartCard-HSM application (or until
        pcscd sees the slot empty)."""
        deadline = time.time() + WAIT
        while True:
            res = subprocess.run(["opensc-tool", "--reader", str(slot), "-s", SELECT_HSM], env=self.env,
                                 capture_output=True, timeout=30)
            answered = res.returncode == 0 and b"SW1=0x90, SW2=0x00" in res.stdout
            gone = b"No card" in res.stdout + res.stderr or b"not present" in res.stdout + res.stderr
            if (answered if present else gone):
                return
            if time.time() > deadline:
                raise AssertionError(f"slot {slot}: card {'not ' if present else ''}present after {WAIT} s: "
                                     f"{res.stdout.decode(errors='replace')}{res.stderr.decode(errors='replace')}")
            time.sleep(0.1)


# The PC/SC side of PcscClient, in a child process: libpcsclite caches the socket path
# (PCSCLITE_CSOCK_NAME) for the life of a process, so each rig's client gets its own process.
_CLIENT = r"""
import ctypes, ctypes.util, sys
lib = ctypes.CDLL(ctypes.util.find_library("pcsclite") or "libpcsclite.so.1")
ctx, handle, proto = ctypes.c_long(), ctypes.c_long(), ctypes.c_ulong()
def check(rv, what):
    if rv != 0:
        print(f"error {what} 0x{rv & 0xFFFFFFFF:08X}", flush=True)
        sys.exit(1)
check(lib.SCardEstablishContext(2, None, None, ctypes.byref(ctx)), "SCardEstablishContext")
check(lib.SCardConnect(ctx, ctypes.c_char_p(sys.argv[1].encode()), 2, 3, ctypes.byref(handle),
                       ctypes.byref(proto)), "SCardConnect")
pci = (ctypes.c_ulong * 2)(proto.value, 16)
buf = ctypes.create_string_buffer(65538)
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "T":
        apdu = bytes.fromhex(cmd[1])
        n = ctypes.c_ulong(len(buf))
        check(lib.SCardTransmit(handle, ctypes.byref(pci), apdu, ctypes.c_ulong(len(apdu)), None, buf,
                                ctypes.byref(n)), "SCardTransmit")
        print("ok " + buf.raw[:n.value].hex(), flush=True)
    elif cmd[0] == "R":
        check(lib.SCardReconnect(handle, 2, 3, 1, ctypes.byref(proto)), "SCardReconnect")
        print("ok", flush=True)
    else:
        break
lib.SCardDisconnect(handle, 0)
lib.SCardReleaseContext(ctx)
"""


class PcscClient:
    """Raw APDUs to the card in one reader of the rig's pcscd, through libpcsclite (in a child
    process, see _CLIENT)."""

    def __init__(self, rig, slot):
        import sys
        self.proc = subprocess.Popen([sys.executable, "-c", _CLIENT, READERS[slot]], env=rig.env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer("ready")

    def _answer(self, expect="ok"):
        line = self.proc.stdout.readline().strip()
        if not line.startswith(expect):
            raise AssertionError(f"PC/SC client: {line or 'no answer'}")
        return line[len(expect):].strip()

    def transmit(self, apdu):
        """Sends one command APDU (bytes or hex); returns (data, sw)."""
        if isinstance(apdu, str):
            apdu = bytes.fromhex(apdu.replace(" ", ""))
        self.proc.stdin.write(f"T {apdu.hex()}\n")
        self.proc.stdin.flush()
        resp = bytes.fromhex(self._answer())
        return resp[:-2], int.from_bytes(resp[-2:], "big")

    def reset(self):
        """Resets the card (SCardReconnect with SCARD_RESET_CARD): vpcd sends it a reset."""
        self.proc.stdin.write("R\n")
        self.proc.stdin.flush()
        self._answer()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("Q\n")
            self.proc.stdin.close()
            self.proc.wait(10)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DriverPipe:
    """One session of the sks driver on a card (test/helpers/sks_transport_pipe in the build
    tree, `pipe`) for raw wire requests: byte method, then its fields; the reply's first byte is
    the status."""

    def __init__(self, pipe, device, env):
        self.proc = subprocess.Popen([pipe, device], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)

    def call(self, request):
        self.proc.stdin.write(len(request).to_bytes(4, "big") + request)
        self.proc.stdin.flush()
        n = int.from_bytes(self.proc.stdout.read(4), "big")
        return self.proc.stdout.read(n)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)

    def apdus_of(self, card, request):
        """(reply, the command APDUs `card` (a VirtualHsm) logged while the driver handled
        request). An hsmStatus (212) opens the session first, so only the request's own APDUs
        count."""
        if self.call(bytes([212]))[:1] != b"\x00":
            raise AssertionError("hsmStatus failed: no card session")
        mark = len(card.apdu_lines())
        reply = self.call(request)
        return reply, card.apdu_lines()[mark:]


# The steps after UNWRAP KEY a card can refuse (sks-vhsm --fault, --fault-after), as
# (fault, --fault-after, what the driver's error names): signing the challenge that proves the
# new key, signing its certificate (the challenge served first), writing its PrKD, writing its
# certificate (the PrKD written first: a half-described key). hsmUnwrapKey (restore) and
# hsmDomainUnwrapKey (XKEK migration) must each leave no key after any of them.
REFUSALS_AFTER_UNWRAP = [
    ("sign-refused", 0, "does not sign (SW 6982)"),
    ("sign-refused", 1, "SIGN of the certificate: SW 6982"),
    ("prkd-write-refused", 0, "UPDATE BINARY of file C4"),
    ("cert-write-refused", 0, "UPDATE BINARY of file CE"),
]
REFUSAL_IDS = [f"{f}-after-{a}" for f, a, _ in REFUSALS_AFTER_UNWRAP]


def card_objects(env, slot):
    """Every key (CCxx) and file a SmartCard-HSM in `slot` holds, sorted, as OpenSC's opensc-tool
    reads them with ENUMERATE OBJECTS (80 58, extended Le) after selecting the application."""
    res = subprocess.run(["opensc-tool", "--reader", str(slot), "-s", SELECT_HSM, "-s", "80580000000000"], env=env,
                         capture_output=True, timeout=60)
    text = res.stdout.decode(errors="replace")
    answers = re.findall(r"Received \(SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})\)(?::\s*\n(.*?))?(?=\nSending|\Z)",
                         text, re.S)
    if res.returncode != 0 or len(answers) != 2 or answers[1][:2] != ("90", "00"):
        raise AssertionError(f"opensc-tool could not enumerate the card's objects:\n{text}{res.stderr.decode()}")
    # each line: hex bytes (up to 16) then their ASCII
    hexdump = "".join("".join(re.findall(r"\b[0-9A-F]{2}\b", line[:48])) for line in answers[1][2].splitlines())
    return sorted(hexdump[i:i + 4] for i in range(0, len(hexdump), 4))
