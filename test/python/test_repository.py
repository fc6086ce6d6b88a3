"""The repository stands on its own: a bare clone has everything its build, tests and docs
name. The project was started from design notes and test data kept in a folder beside the
repository; nothing tracked may point there any more."""

import os
import re
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Every way a file could name that folder (its parent reference, or its seeds, conformance,
# hooks and notes). Built from parts so this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + "shared" + r"\b|\b" + "shared" + r"/(seeds|conformance|hooks|DESIGN\.md|smartcard-hsm\.md)")


# The recorded transcript is kept byte for byte as it was recorded; its free-text description
# names the specification by its old path, which nothing reads.
RECORDED_DATA = {"test/data/kat/sks-kat-transcript.jsonl"}


def tracked_files():
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f]


def test_no_tracked_file_refers_outside_the_repository():
    files = tracked_files()
    assert len(files) > 100, "git ls-files found too few files: is this a clone?"
    offenders = []
    for f in files:
        path = os.path.join(ROOT, f)
        if f in RECORDED_DATA or not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{f}:{n}: {line.strip()[:120]}")
    assert not offenders, "tracked files refer to a folder outside the repository:\n" + "\n".join(offenders)


def test_known_answer_transcript_is_in_the_repository():
    path = os.path.join(ROOT, "test", "data", "kat", "sks-kat-transcript.jsonl")
    assert os.path.getsize(path) > 100000
    with open(os.path.join(ROOT, "test", "data", "kat", "README.md")) as fh:
        assert "70c3c05a" in fh.read(), "the transcript's origin (openkeystore commit) is not recorded"
