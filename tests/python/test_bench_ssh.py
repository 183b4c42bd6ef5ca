"""The SSH transport against a real sshd on 127.0.0.1 (tests/python/sshd.py).

Every failure path must give a one-line TransportError and leave no remote temp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sshd import Sshd, remote_temp_dirs, sshd_skip_reason, write_fake_ek_run

pytestmark = pytest.mark.skipif(sshd_skip_reason() is not None,
                                reason=sshd_skip_reason() or "")

from edgekit.bench.backends import edgekit as ek  # noqa: E402
from edgekit.bench.backends.common import Plan  # noqa: E402
from edgekit.bench.transports import RemoteTimeout, TransportError  # noqa: E402


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def no_leftovers():
    before = remote_temp_dirs()
    yield
    assert remote_temp_dirs() - before == set(), "remote temp dir left behind"


def test_push_run_pull_and_cleanup(sshd, tmp_path, no_leftovers):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    with sshd.transport() as t:
        remote = t.push(src, executable=True)
        assert remote.startswith("/tmp/edgekit-bench.") and Path(remote).exists()
        res = t.run(["cat", "in.txt"], timeout=30)
        assert (res.rc, res.stdout, res.signal) == (0, "hello", None)
        assert t.run(["sh", "-c", "exit 3"], timeout=30).rc == 3
        t.pull(remote, tmp_path / "back.txt")
        assert (tmp_path / "back.txt").read_text() == "hello"
        workdir = t.workdir
    assert not Path(workdir).exists()


def test_arguments_are_not_shell_code(sshd, tmp_path, no_leftovers):
    victim = tmp_path / "pwned"
    evil = f"x; touch {victim}; echo $(id) `id` && true"
    with sshd.transport() as t:
        res = t.run(["printf", "%s", evil], timeout=30)
    assert res.stdout == evil
    assert not victim.exists()


def test_unreachable_host_is_a_clear_error(sshd):
    from edgekit.bench.transports.ssh import SSHTransport

    with pytest.raises(TransportError, match="cannot reach 127.0.0.1:1"):
        SSHTransport("127.0.0.1", port=1, key=str(sshd.key),
                     known_hosts=str(sshd.known_hosts), connect_timeout=3)


def test_bad_key_is_a_clear_error(sshd):
    with pytest.raises(TransportError, match="authentication .* failed with key"):
        sshd.transport(key=str(sshd.other_key))
    with pytest.raises(TransportError, match="does not exist"):
        sshd.transport(key=str(sshd.dir / "nope"))


def test_host_key_verified_by_default(sshd, no_leftovers):
    empty = str(sshd.dir / "empty_known_hosts")
    with pytest.raises(TransportError, match="--insecure-accept-host-key"):
        sshd.transport(known_hosts=empty)
    wrong = sshd.dir / "wrong_known_hosts"
    other = (sshd.dir / "other_key.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other[0]} {other[1]}\n")
    with pytest.raises(TransportError, match="does not match"):
        sshd.transport(known_hosts=str(wrong))
    with sshd.transport(known_hosts=empty, insecure_accept_host_key=True) as t:
        assert t.run(["true"], timeout=30).rc == 0
    assert Path(empty).read_text() == ""  # opting out saves nothing


def test_remote_timeout_kills_and_cleans_up(sshd, no_leftovers):
    with sshd.transport() as t:
        with pytest.raises(RemoteTimeout, match="1 s timeout"):
            t.run(["sleep", "300"], timeout=1)
        pid = int(Path(t.workdir, ".pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_killed_remote_ek_run_is_a_clear_error(sshd, tmp_path, no_leftovers):
    exe_local = write_fake_ek_run(tmp_path / "ek-run", mode="kill")
    model = tmp_path / "m.ekm"
    model.write_bytes(b"x" * 100)
    with sshd.transport() as t:
        exe = t.push(exe_local, "ek-run", executable=True)
        with pytest.raises(TransportError, match="killed by"):
            ek.run_ek_run(t, exe, t.push(model), Plan(min_runs=2, min_time_s=0), 1, 0,
                          True, False, None, None)


def test_hanging_remote_ek_run_times_out(sshd, tmp_path, no_leftovers):
    exe_local = write_fake_ek_run(tmp_path / "ek-run", mode="sleep")
    model = tmp_path / "m.ekm"
    model.write_bytes(b"x" * 100)
    with sshd.transport() as t:
        exe = t.push(exe_local, "ek-run", executable=True)
        with pytest.raises(RemoteTimeout):
            ek.run_ek_run(t, exe, t.push(model), Plan(min_runs=2, min_time_s=0,
                                                      max_time_s=0.5), 1, 0, True, False,
                          None, None, slack_s=0.5)


def test_exception_inside_with_still_cleans_up(sshd, no_leftovers):
    with pytest.raises(ZeroDivisionError):
        with sshd.transport() as t:
            t.run(["true"], timeout=30)
            1 / 0


def test_version_mismatch_is_refused(sshd, tmp_path, monkeypatch, no_leftovers):
    host = write_fake_ek_run(tmp_path / "host-ek-run", version="0.1.0")
    dev = write_fake_ek_run(tmp_path / "dev-ek-run", version="0.0.9")
    monkeypatch.setenv("EDGEKIT_EK_RUN", str(host))
    assert ek.host_version() == "0.1.0"
    with sshd.transport() as t:
        exe = t.push(host, "ek-run", executable=True)
        assert ek.check_version(t, exe, ek.host_version()) == "0.1.0"
        exe = t.push(dev, "ek-run2", executable=True)
        with pytest.raises(TransportError, match="0.0.9.*0.1.0"):
            ek.check_version(t, exe, ek.host_version())


def _ssh_profile(sshd, tmp_path) -> Path:
    p = tmp_path / "lo.yaml"
    base = Path(__file__).resolve().parents[2] / "device_profiles" / "x86-host.yaml"
    text = base.read_text().replace("name: x86-host", "name: lo")
    text = text.split("reach:")[0] + (
        f"reach:\n  transport: ssh\n  host: 127.0.0.1\n  port: {sshd.port}\n"
        f"  user: {sshd.user}\n  key: {sshd.key}\n  known_hosts: {sshd.known_hosts}\n")
    p.write_text(text)
    return p


def test_bench_over_ssh_end_to_end(sshd, tmp_path, monkeypatch, no_leftovers):
    from click.testing import CliRunner

    from edgekit.bench import schema
    from edgekit.cli.main import cli
    from ekm_models import streaming_model
    from edgekit.export import ekm

    monkeypatch.setenv("EDGEKIT_EK_RUN", str(write_fake_ek_run(tmp_path / "ek-run")))
    m = streaming_model()
    m.meta = {"streaming": {"graph": "step", "input": "chunk", "chunk": 4}}
    ekm.write(m, tmp_path / "m.ekm")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["bench", str(tmp_path / "m.ekm"), "--device",
                                 str(_ssh_profile(sshd, tmp_path)), "--backend", "edgekit",
                                 "--min-time", "0", "--min-runs", "5", "-o", str(out),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    res = schema.load(out / "m.edgekit.lo.json")
    assert res["kind"] == "measured" and res["device"]["transport"]["kind"] == "ssh"
    assert res["backend"]["version"] == "0.1.0" and len(res["samples_us"]) == 5
    assert res["device"]["os"].startswith("Linux")
    assert res["streaming"]["chunk_ms"] == 40.0 and res["per_op"][0]["op"] == "matmul"


@pytest.mark.arm
def test_aarch64_runner_under_qemu_behind_sshd(sshd, tmp_path, no_leftovers):
    """The static aarch64 runner and a tiny model pushed over SSH; the model runs under
    qemu -cpu cortex-a72 (no dotprod), so the runner must pick the NEON v8.0 kernels."""
    import shutil

    from edgekit.export import ekm
    from ekm_models import streaming_model

    root = Path(__file__).resolve().parents[2]
    exe = Path(os.environ.get("EDGEKIT_EK_RUN_AARCH64", root / "build/aarch64/ek-run"))
    if not exe.is_file() or shutil.which("qemu-aarch64") is None:
        pytest.skip("needs build/aarch64/ek-run (targets/qemu/build.sh) and qemu-user")
    ekm.write(streaming_model(), tmp_path / "tiny.ekm")

    class UnderQemu:  # the transport as ek-run sees it: every command through qemu-user
        def __init__(self, t):
            self.t = t

        def run(self, argv, timeout):
            return self.t.run(["qemu-aarch64", "-cpu", "cortex-a72", *argv], timeout)

    with sshd.transport() as t:
        remote = t.push(exe, "ek-run", executable=True)
        model = t.push(tmp_path / "tiny.ekm", "tiny.ekm")
        raw = ek._invoke(UnderQemu(t), remote, model,
                         ["--warmup", "0", "--iters", "1", "--fill", "random"], 300)
        workdir = t.workdir
    # _invoke raises on a nonzero exit or a signal, so reaching here means rc 0.
    assert raw["isa"] == "neon", raw
    assert len(raw["iters_us"]) == 1 and raw["iters_us"][0] > 0
    assert not Path(workdir).exists()


def test_onnxruntime_on_the_device_with_its_python(sshd, tmp_path, no_leftovers):
    """reach.python: the device's own Python runs the onnxruntime backend (files pushed)."""
    import sys

    from click.testing import CliRunner

    from edgekit.bench import schema
    from edgekit.cli.main import cli
    from test_bench_harness import write_matmul_onnx

    write_matmul_onnx(tmp_path / "mm.onnx")
    prof = _ssh_profile(sshd, tmp_path)
    prof.write_text(prof.read_text() + f"  python: {sys.executable}\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["bench", str(tmp_path / "mm.onnx"), "--device", str(prof),
                                 "--backend", "onnxruntime", "--min-time", "0",
                                 "--min-runs", "5", "-o", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    res = schema.load(out / "mm.onnxruntime.lo.json")
    assert res["device"]["transport"]["kind"] == "ssh" and res["memory"]["peak_rss_kb"] > 0
    r = CliRunner().invoke(cli, ["bench", str(tmp_path / "mm.onnx"), "--device", str(prof),
                                 "--backend", "torch", "-o", str(out), "--quiet"])
    assert r.exit_code == 2


def test_push_cannot_escape_the_workdir(sshd, tmp_path, no_leftovers):
    (tmp_path / "f").write_text("x")
    with sshd.transport() as t:
        for bad in ("../f", "/etc/f", "a/../../f", "a//f"):
            with pytest.raises(TransportError, match="bad remote file name"):
                t.push(tmp_path / "f", bad)
        assert t.push(tmp_path / "f", "a/b/f").endswith("/a/b/f")


def test_dropped_connection_is_a_clear_error(sshd, no_leftovers):
    t = sshd.transport()
    t._client.get_transport().close()  # the network goes away
    with pytest.raises(TransportError, match="closed|failed"):
        t.run(["true"], timeout=10)
    t.cleanup()
