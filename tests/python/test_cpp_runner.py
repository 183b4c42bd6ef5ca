"""Build the host C++ test runner (ek-test) with CMake and run it.

ek-test compares every compiled linear variant this CPU supports (x86: avx2, avx512, ...)
with the reference, tolerance 0, over the edge cases of tests/cpp/cases.cc, and checks the
Python-written golden vectors; these tests assert on its verdict and on dispatch's choices.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "cpp-host"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
CHECKED = re.compile(r"^checked (\S+): (\d+) passed, (\d+) failed$", re.M)
VARIANT = re.compile(r"^variant (\S+)\s+isa=(\S+)\s+(run|skipped.*)$", re.M)


def tool(name: str) -> str | None:
    """A build tool from the active virtualenv first (make setup installs cmake and ninja)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def summary(out: str) -> tuple[int, int]:
    """(passed, failed) from ek-test's last line, which must be the summary."""
    last = out.strip().splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, f"last line is not 'N passed, M failed': {last!r}"
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="session")
def ek_test() -> Path:
    cmake = tool("cmake")
    if cmake is None:
        pytest.fail("cmake not found: it is a development requirement (make setup)")
    BUILD.mkdir(parents=True, exist_ok=True)
    # Another pytest run (or a developer) may build the same directory at the same time.
    with open(BUILD / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure = [cmake, "-S", str(ROOT), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
                     "-DEDGEKIT_PYTHON=OFF", "-DEDGEKIT_TESTS=ON"]
        if not (BUILD / "CMakeCache.txt").exists() and tool("ninja"):
            configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}"]
        for cmd in (configure, [cmake, "--build", str(BUILD), "-j2", "--target", "ek-test"]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    return BUILD / "ek-test"


def run(binary: Path, *args: str, isa: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_ISA"}
    if isa is not None:
        env["EDGEKIT_ISA"] = isa
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_every_supported_variant_equals_reference(ek_test):
    r = run(ek_test)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    passed, failed = summary(r.stdout)
    assert failed == 0
    variants = VARIANT.findall(r.stdout)
    ran = [name for name, _, state in variants if state == "run"]
    assert ran and ran[0].endswith("__scalar"), "the reference must be listed first and run"
    checked = {name: (int(p), int(f)) for name, p, f in CHECKED.findall(r.stdout)}
    cases = int(re.search(r"^cases: (\d+)", r.stdout, re.M).group(1))
    golden = re.search(r"^golden: (\d+) vectors", r.stdout, re.M)
    assert cases >= 300
    assert golden, "tests/golden was not found by the runner"
    ngolden = int(golden.group(1))
    assert ngolden == len(list((ROOT / "tests" / "golden").glob("*.ekpw")))
    # Every variant the CPU runs was checked on every case and golden vector (the reference
    # also against the int64 oracle).
    for name in ran:
        assert checked[name] == (cases + ngolden, 0), (name, checked.get(name))
    assert passed >= (cases + ngolden) * len(ran)


def test_dispatch_picks_last_supported_variant(ek_test):
    r = run(ek_test, "--no-golden", "--extra", "0")
    ran = [isa for _, isa, state in VARIANT.findall(r.stdout) if state == "run"]
    chosen = re.search(r"^dispatch: linear -> isa=(\S+)", r.stdout, re.M).group(1)
    assert chosen == ran[-1]
    # --expect-isa agrees with what was printed.
    ok = run(ek_test, "--no-golden", "--extra", "0", "--expect-isa", chosen)
    assert ok.returncode == 0 and summary(ok.stdout)[1] == 0


def test_expect_isa_mismatch_is_a_failure(ek_test):
    r = run(ek_test, "--no-golden", "--extra", "0", "--expect-isa", "neon")
    assert r.returncode == 1
    assert "expected neon" in r.stdout
    assert summary(r.stdout)[1] == 1


def test_forced_reference_is_selected(ek_test):
    r = run(ek_test, "--no-golden", "--extra", "0", "--expect-isa", "ref", isa="ref")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "dispatch: linear -> isa=ref " in r.stdout


@pytest.mark.parametrize("isa,reason", [("sse9", "unknown ISA"), ("neon", "not compiled")])
def test_forced_isa_that_cannot_run_is_refused(ek_test, isa, reason):
    r = run(ek_test, isa=isa)
    assert r.returncode == 2
    assert "dispatch refused" in r.stdout and reason in r.stdout and isa in r.stdout
    assert "passed" not in r.stdout  # refused before any check ran


@pytest.mark.parametrize("args", [["--frobnicate"], ["--extra"], ["--extra", "-5"],
                                  ["--extra", "10x"], ["--seed", "abc"]])
def test_bad_arguments_exit_2_with_usage(ek_test, args):
    r = run(ek_test, *args)
    assert r.returncode == 2
    assert "usage: ek-test" in r.stderr and "passed" not in r.stdout


def test_registered_with_ctest(ek_test):
    ctest = tool("ctest")
    if ctest is None:
        pytest.fail("ctest not found next to cmake")
    r = subprocess.run([ctest, "--test-dir", str(BUILD), "--output-on-failure"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "100% tests passed" in r.stdout
