"""Local, adb (recorded outputs: adb is not installed here) and qemu transports."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edgekit.bench.transports import RemoteTimeout, TransportError
from edgekit.bench.transports import adb
from edgekit.bench.transports.local import LocalTransport

ROOT = Path(__file__).resolve().parents[2]


def test_local_push_run_pull_cleanup(tmp_path):
    (tmp_path / "f").write_text("data")
    with LocalTransport() as t:
        dst = t.push(tmp_path / "f", "g", executable=True)
        assert t.run(["cat", "g"], 10).stdout == "data"
        t.pull(dst, tmp_path / "back")
        d = t.workdir
    assert (tmp_path / "back").read_text() == "data" and not Path(d).exists()
    with LocalTransport() as t, pytest.raises(TransportError, match="no such file"):
        t.push(tmp_path / "missing")


def test_local_timeout_kills_the_process_group(tmp_path):
    with LocalTransport() as t:
        start = time.monotonic()
        with pytest.raises(RemoteTimeout, match="timeout"):
            t.run(["sh", "-c", "sleep 60 & sleep 60"], 0.5)
        assert time.monotonic() - start < 10
        res = t.run(["sh", "-c", "kill -9 $$"], 10)
        assert res.signal == 9
        with pytest.raises(TransportError, match="not found"):
            t.run(["no-such-runner-xyz"], 10)


def test_runner_peak_rss_is_its_own_not_ours():
    """Linux keeps ru_maxrss across fork+exec; a runner started by this (big) process must
    still report its own peak, as ek-run does with getrusage."""
    import resource
    import sys

    big = bytearray(300 << 20)  # make this process's peak clearly larger than a child's
    big[::4096] = b"x" * len(big[::4096])
    ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    with LocalTransport() as t:
        child = int(t.run([sys.executable, "-c", code], 60).stdout)
    assert ours > 300_000 and child < 100_000, (ours, child)
    del big


# Recorded adb outputs (platform-tools 34-35). adb exits 0 on several of these failures.
DEVICES = "List of devices attached\nR58M123ABC\tdevice\nemulator-5554\toffline\n\n"
DEVICES_UNAUTH = "List of devices attached\nR58M123ABC\tunauthorized\n\n"
PUSH_OK = "/tmp/ek-run: 1 file pushed, 0 skipped. 301.2 MB/s (2473656 bytes in 0.008s)\n"
PUSH_FAIL = "adb: error: failed to copy '/tmp/ek-run' to '/data/local/tmp/x/ek-run': " \
            "remote couldn't create file: Permission denied\n"


class FakeADB:
    """Replays adb: maps a recognisable piece of each command line to (rc, out, err)."""

    def __init__(self, devices=DEVICES, push=(0, PUSH_OK, "")):
        self.calls = []
        self.devices, self.push = devices, push

    def __call__(self, argv, timeout):
        self.calls.append(argv)
        if argv[-1] == "devices":
            return 0, self.devices, ""
        if "push" in argv:
            return self.push
        cmd = argv[-1]
        if cmd.startswith("mktemp"):
            return 0, "/data/local/tmp/edgekit-bench.Ab12Cd34\n__EDGEKIT_RC=0\n", ""
        if "ek-run" in cmd and "--version" in cmd:
            return 0, '{"ek_run_version": "0.1.0"}\r\n__EDGEKIT_RC=0\r\n', ""
        if "segv" in cmd:
            return 0, "__EDGEKIT_RC=139\n", ""
        if "dropped" in cmd:
            return 0, "partial output", "error: closed"
        return 0, "__EDGEKIT_RC=0\n", ""


def test_adb_parsers():
    assert adb.parse_devices(DEVICES) == {"R58M123ABC": "device", "emulator-5554": "offline"}
    assert adb.parse_devices("* daemon started successfully\nList of devices attached\n\n") == {}
    adb.check_push_output(0, PUSH_OK, "")
    with pytest.raises(TransportError, match="Permission denied"):
        adb.check_push_output(0, PUSH_FAIL, "")  # exit 0, but it failed
    assert adb.split_status("hello\r\n__EDGEKIT_RC=3\r\n") == ("hello", 3)
    with pytest.raises(TransportError, match="no exit status"):
        adb.split_status("hello")


def test_adb_transport_flow(tmp_path):
    fake = FakeADB()
    (tmp_path / "ek-run").write_bytes(b"\x7fELF")
    t = adb.ADBTransport("R58M123ABC", runner=fake)
    dst = t.push(tmp_path / "ek-run", executable=True)
    assert dst == "/data/local/tmp/edgekit-bench.Ab12Cd34/ek-run"
    res = t.run([dst, "--version"], 30)
    assert res.rc == 0 and res.stdout.strip() == '{"ek_run_version": "0.1.0"}'
    assert "; evil" not in t.run(["echo", "a; evil"], 30).stdout
    assert "'a; evil'" in fake.calls[-1][-1]  # quoted for the device shell
    res = t.run(["segv"], 30)
    assert res.rc == 139 and res.signal == 11
    with pytest.raises(TransportError, match="no exit status"):
        t.run(["dropped"], 30)
    t.cleanup()
    assert fake.calls[-1][-1].startswith("rm -rf /data/local/tmp/edgekit-bench.")
    assert all(c[:3] == ["adb", "-s", "R58M123ABC"] for c in fake.calls[1:])


def test_adb_failures_are_clear(tmp_path):
    with pytest.raises(TransportError, match="unauthorized"):
        adb.ADBTransport("R58M123ABC", runner=FakeADB(devices=DEVICES_UNAUTH))
    with pytest.raises(TransportError, match="not attached"):
        adb.ADBTransport("nope", runner=FakeADB())
    with pytest.raises(TransportError, match="2 devices"):
        adb.ADBTransport(None, runner=FakeADB())
    (tmp_path / "f").write_bytes(b"x")
    t = adb.ADBTransport("R58M123ABC", runner=FakeADB(push=(0, PUSH_FAIL, "")))
    with pytest.raises(TransportError, match="adb push failed"):
        t.push(tmp_path / "f")


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user not installed")
def test_qemu_runs_aarch64_binaries_with_the_profile_cpu():
    from edgekit.bench.transports.qemu import QemuTransport

    exe = ROOT / "build/aarch64/ek-run"
    if not exe.is_file():
        exe = ROOT / "build/aarch64/ek-test"
    if not exe.is_file():
        pytest.skip("no aarch64 build (targets/qemu/build.sh)")
    with QemuTransport("cortex-a72") as q:
        assert not q.measures and q.prefix[1:] == ["-cpu", "cortex-a72"]
        remote = q.push(exe, "runner", executable=True)
        res = q.run([remote, "--help"], 120)
    assert res.signal is None and (res.stdout + res.stderr).strip()
