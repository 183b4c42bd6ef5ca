"""Malformed EKM files through the C++ loader: every case of the shared corrupt-file suite
(tests/python/ekm_corrupt.py) and random corruptions are errors, never a crash; the C++
reader's own test runner (ek-test-ekm, slow: it builds a CMake tree) and the fuzz target,
run briefly (slow). Files that still load are planned and run on zero inputs."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ekm_corrupt
import ekm_models
from edgekit.export import ekm
from edgekit.runtime import RuntimeModelError, Session, available

pytestmark = pytest.mark.skipif(not available(), reason="edgekit._C runtime not built (make build)")
ROOT = Path(__file__).resolve().parents[2]


def load(b: bytes):
    from edgekit import _C
    return _C.RuntimeModel.from_bytes(b)


def fixed(b: bytes | bytearray) -> bytes:
    """file_bytes and CRC recomputed, so a corruption reaches the checks behind the checksum."""
    b = bytearray(b)
    if len(b) >= 64:
        struct.pack_into("<Q", b, 24, len(b))
        struct.pack_into("<I", b, 32, zlib.crc32(bytes(b[64:])))
    return bytes(b)


VALID = ekm_corrupt.valid_file()
CASES = list(ekm_corrupt.corrupt_cases(VALID))


def test_valid_file_loads():
    m = load(VALID)
    assert m.graph_names == ["step"] and m.file_bytes == len(VALID)
    run_every_graph(m)


@pytest.mark.parametrize("desc,data", CASES, ids=[c[0] for c in CASES])
def test_corrupt_case_is_an_error(desc, data):
    with pytest.raises(RuntimeModelError) as e:
        load(data)
    msg = str(e.value)
    assert msg and "\n" not in msg


def test_corrupt_cases_through_files_and_sessions(tmp_path):
    """The mmap path (Session) gives the same verdicts as loading from memory."""
    for i, (desc, data) in enumerate(CASES[::7]):
        p = tmp_path / f"{i}.ekm"
        p.write_bytes(data)
        with pytest.raises(RuntimeModelError, match=re.escape(str(p))):
            Session(p)


@pytest.mark.parametrize("desc,data", list(ekm_corrupt.meta_json_cases(VALID)))
def test_bad_meta_json_fails_at_session(tmp_path, desc, data):
    """The C++ loader only checks META is UTF-8; picking the streaming graph parses it."""
    load(data)
    p = tmp_path / "m.ekm"
    p.write_bytes(data)
    with pytest.raises(RuntimeModelError, match="META"):
        Session(p)


def test_every_truncation_and_prefix_with_fixed_crc():
    for n in range(0, len(VALID), 3):
        for data in (VALID[:n], fixed(VALID[:n])):
            with pytest.raises(RuntimeModelError):
                load(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(64, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=4))
def test_random_byte_edits_never_crash(edits):
    """Byte edits with a valid checksum: either a clean error or a model that still runs."""
    b = bytearray(VALID)
    for pos, x in edits:
        b[pos] ^= x
    try:
        m = load(fixed(b))
    except RuntimeModelError:
        return
    assert m.graph_names  # still consistent after the edit (e.g. a float constant changed)
    run_every_graph(m)


_NP = {"f32": np.float32, "i32": np.int32, "i8": np.int8, "u8": np.uint8, "i64": np.int64}


def run_every_graph(m) -> None:
    """A file that loads must also plan and run (reference kernels, zero inputs) without a
    crash: the loader's checks are only worth something if execution trusts nothing else."""
    from edgekit import _C
    for g in m.graph_names:
        try:
            s = _C.RuntimeSession(m, g, 1, "ref")
        except RuntimeModelError:
            continue
        if any(int(np.prod(d["shape"])) > 1 << 22 for d in s.inputs):
            continue  # an edited shape the runtime accepted; feeding it would only test numpy
        feeds = {d["name"]: np.zeros(d["shape"], _NP[d["dtype"]]) for d in s.inputs}
        try:
            s.run(feeds)
        except RuntimeModelError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5 * 32 - 8), st.sampled_from([0, 1, 63, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1]))
def test_hostile_section_table_values(pos, value):
    b = bytearray(VALID)
    struct.pack_into("<Q", b, 64 + pos, value)
    try:
        m = load(fixed(b))
    except RuntimeModelError:
        return
    run_every_graph(m)


# -- C++ runners ---------------------------------------------------------------------------

def _cmake() -> str:
    c = Path(sys.executable).parent / "cmake"
    found = str(c) if c.exists() else shutil.which("cmake")
    if found is None:
        pytest.fail("cmake not found: it is a development requirement (make setup)")
    return found


def _build(build: Path, target: str, *defs: str) -> Path:
    build.mkdir(parents=True, exist_ok=True)
    ninja = Path(sys.executable).parent / "ninja"
    with open(build / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure = [_cmake(), "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                     "-DEDGEKIT_PYTHON=OFF", *defs]
        if not (build / "CMakeCache.txt").exists() and ninja.exists():
            configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        for cmd in (configure, [_cmake(), "--build", str(build), "-j2", "--target", target]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if r.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed:\n{(r.stdout + r.stderr)[-4000:]}")
    return build / target


@pytest.mark.slow
def test_cpp_reader_tests():
    """ek-test-ekm: CRC, UTF-8, META lookup, planner invariants, thread pool, golden files."""
    binary = _build(ROOT / "build" / "cpp-host", "ek-test-ekm", "-DEDGEKIT_TESTS=ON")
    r = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    m = re.search(r"^(\d+) passed, (\d+) failed$", r.stdout.strip().splitlines()[-1])
    assert m and int(m.group(2)) == 0 and int(m.group(1)) > 200


@pytest.mark.slow
def test_fuzz_reader_briefly(tmp_path):
    """The libFuzzer-style target under ASan + UBSan with the gcc mutation driver, 30 s, seeded
    with the golden files and this suite's corrupt cases."""
    binary = _build(ROOT / "build" / "fuzz", "ek-fuzz-ekm", "-DEDGEKIT_FUZZ=standalone",
                    "-DEDGEKIT_TOOLS=OFF")
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "streaming.ekm").write_bytes(VALID)
    (seeds / "two.ekm").write_bytes(ekm.to_bytes(ekm_models.two_graph_model()))
    for i, (_, data) in enumerate(CASES[::5]):
        (seeds / f"c{i}.ekm").write_bytes(data)
    env = {**os.environ, "UBSAN_OPTIONS": "abort_on_error=1:print_stacktrace=1",
           "ASAN_OPTIONS": "abort_on_error=1"}
    r = subprocess.run([str(binary), "-max_total_time=30", "-seed=1", str(seeds)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    crash = tmp_path / "crash-input.ekm"
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:] + (f"\ninput kept: {crash}" if crash.exists() else "")
    m = re.search(r"ek-fuzz-ekm: (\d+) inputs in [\d.]+ s from (\d+) seeds, no crash", r.stdout)
    assert m and int(m.group(1)) > 1000, r.stdout


def test_op_writing_an_output_of_no_graph_is_rejected():
    """Found by the fuzz target: an op writing a kind-output tensor that its graph does not
    list as an output had no buffer to write to (a null store); the reader now rejects it."""
    from edgekit.export import ir
    from edgekit.export.ekm import layout as L

    t = {"x": ir.Tensor("x", "f32", (1, 4), "input"), "y": ir.Tensor("y", "f32", (1, 4), "output"),
         "h": ir.Tensor("h", "f32", (1, 4), "activation")}
    g = ir.Graph("g", [ir.Op("relu", "a", ["x"], ["h"]), ir.Op("relu", "b", ["x"], ["y"])], ["x"], ["y"])
    b = bytearray(ekm.to_bytes(ir.Model(t, {"g": g}, {})))
    off = ekm_corrupt.locate(bytes(b))[L.TENSORS][0]
    index = list(ekm.from_bytes(bytes(b)).tensors).index("h")
    assert b[off + 64 * index + 5] == 4
    b[off + 64 * index + 5] = 3  # 'h' becomes a graph output that no graph lists
    with pytest.raises(RuntimeModelError, match="writes 'h', a graph output that is not an output of this graph"):
        load(fixed(b))


@pytest.mark.parametrize("dims", [(2**31, 1, 1), (2**16, 2**15, 1)])
def test_exactly_2_31_elements_is_refused(dims):
    """Ops index with int: a dim or element count of exactly 2^31 must not load."""
    t0 = ekm_corrupt._tensor(VALID, 0)
    assert VALID[t0 + 6] == 3
    with pytest.raises(RuntimeModelError, match="2\\^31 or more elements"):
        load(ekm_corrupt._patch(VALID, t0 + 8, "<qqq", *dims))
