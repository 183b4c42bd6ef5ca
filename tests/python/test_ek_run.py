"""ek-run (csrc/tools/ek_run.cc), the standalone runner, against docs/runtime.md: its JSON,
its outputs against the Python Session, its .npy reader, its errors; `edgekit run`; and the
static aarch64 build under qemu (cortex-a72 and cortex-a76) against the host Session on a
zoo model (marked `arm`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ekm_models
from edgekit.cli.main import cli
from edgekit.export import ekm
from edgekit.runtime import Session, available, ek_run_path

pytestmark = pytest.mark.skipif(not available(), reason="edgekit._C runtime not built (make build)")
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ek_run_version", "model", "model_bytes", "model_crc32", "graph", "isa", "kernel",
        "threads", "arena_bytes", "state_bytes", "load_us", "first_us", "iters_us", "per_op",
        "peak_rss_kb", "outputs"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ekrun") / "streaming.ekm"
    ekm.write(ekm_models.streaming_model(), path)
    return path


def ek_run(*args, binary=None, prefix=(), env=None, timeout=120) -> tuple[int, dict, str]:
    env = {**{k: v for k, v in os.environ.items() if k != "EDGEKIT_ISA"}, **(env or {})}
    r = subprocess.run([*prefix, str(binary or ek_run_path()), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, f"ek-run must print exactly one JSON line, got:\n{r.stdout}\n{r.stderr}"
    return r.returncode, json.loads(lines[0]), r.stderr


def test_json_and_outputs_match_session(model_path, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 4, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, _ = ek_run(model_path, "--input", f"chunk={tmp_path / 'x.npy'}", "--iters", 4,
                        "--warmup", 2, "--per-op", "--output-dir", tmp_path / "o")
    assert rc == 0, out
    assert KEYS <= set(out)
    assert out["graph"] == "step" and out["threads"] == 1 and len(out["iters_us"]) == 4
    assert out["model_bytes"] == model_path.stat().st_size
    assert out["model_crc32"] == "0x%08x" % int.from_bytes(model_path.read_bytes()[32:36], "little")
    s = Session(model_path)
    assert out["arena_bytes"] == s.arena_bytes and out["state_bytes"] == s.state_bytes
    assert out["isa"] == s.isa and out["kernel"] == s.kernel
    assert out["peak_rss_kb"] > 0 and out["load_us"] > 0
    assert [p["name"] for p in out["per_op"]] == [p["name"] for p in s.profile()]
    assert all(p["calls"] == 4 for p in out["per_op"])
    assert out["outputs"]["logits"]["shape"] == [1, 4, 5]
    # Without --stream each iteration starts from reset state: the output is one step.
    got = np.load(out["outputs"]["logits"]["file"])
    np.testing.assert_array_equal(got, s.step(x)["logits"])


def test_stream_carries_state(model_path, tmp_path):
    x = np.random.default_rng(1).standard_normal((1, 4, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, _ = ek_run(model_path, "--input", f"chunk={tmp_path / 'x.npy'}", "--stream",
                        "--warmup", 1, "--iters", 2, "--output-dir", tmp_path)
    assert rc == 0 and out["stream"] is True
    s = Session(model_path)
    for _ in range(1 + 1 + 2):  # first call, warmup, iterations
        want = s.step(x)["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), want)


def test_fill_random_is_seeded(model_path, tmp_path):
    runs = [ek_run(model_path, "--fill", "random", "--seed", 5, "--iters", 1, "--output-dir", tmp_path / str(i))
            for i in range(2)]
    a, b = (np.load(r[1]["outputs"]["logits"]["file"]) for r in runs)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0


def test_threads_and_isa(model_path):
    rc, out, _ = ek_run(model_path, "--threads", 2, "--isa", "ref", "--iters", 1)
    assert rc == 0 and out["threads"] == 2 and out["isa"] == "ref"
    rc, out, _ = ek_run(model_path, "--iters", 1, env={"EDGEKIT_ISA": "ref"})
    assert rc == 0 and out["isa"] == "ref"


def test_version():
    rc, out, _ = ek_run("--version")
    assert rc == 0 and out == {"ek_run_version": "0.1.0"}


def _npy_with_header(tmp_path: Path, header: str, data: bytes) -> Path:
    h = header.encode() + b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    p = tmp_path / "bad.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data)
    return p


@pytest.mark.parametrize("case,match", [
    ("fortran", "Fortran order"),
    ("f64", "npy dtype '<f8' is not supported"),
    ("short", "data is 16 bytes, the header implies 256"),
    ("magic", "not a .npy file"),
    ("shape", r"must have shape \(1, 4, 16\), got \(4, 16\)"),
    ("pickle", "unexpected key"),
])
def test_npy_reader_validates(model_path, tmp_path, case, match):
    good = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4, 16), }"
    if case == "fortran":
        p = _npy_with_header(tmp_path, good.replace("False", "True"), bytes(256))
    elif case == "f64":
        p = tmp_path / "x.npy"
        np.save(p, np.zeros((1, 4, 16)))
    elif case == "short":
        p = _npy_with_header(tmp_path, good, bytes(16))
    elif case == "magic":
        p = tmp_path / "x.npy"
        p.write_bytes(b"not numpy at all")
    elif case == "shape":
        p = tmp_path / "x.npy"
        np.save(p, np.zeros((4, 16), np.float32))
    else:
        p = _npy_with_header(tmp_path, good[:-3] + ", 'evil': 1, }", bytes(256))
    rc, out, err = ek_run(model_path, "--input", f"chunk={p}")
    assert rc == 2 and set(out) == {"ek_run_version", "error"}
    assert __import__("re").search(match, out["error"]), out["error"]
    assert "ek-run: error:" in err


@pytest.mark.parametrize("args,match", [
    (["--iters", "0"], "--iters must be"),
    (["--threads", "x"], "--threads must be"),
    (["--fill", "ones"], "--fill must be"),
    (["--frobnicate"], "unknown option --frobnicate"),
    (["--input", "nope=x.npy"], "graph 'step' has no input 'nope'"),
    (["--input", "chunk"], "--input must be NAME=file.npy"),
    (["--graph", "enc"], "no graph 'enc'"),
    (["--isa", "sse9"], "unknown ISA 'sse9'"),
])
def test_bad_arguments_exit_2(model_path, args, match):
    rc, out, _ = ek_run(model_path, *args)
    assert rc == 2 and match in out["error"]


def test_bad_files_exit_2(tmp_path, model_path):
    rc, out, _ = ek_run(tmp_path / "missing.ekm")
    assert rc == 2 and "cannot open" in out["error"]
    b = bytearray(model_path.read_bytes())
    b[200] ^= 1
    (tmp_path / "flip.ekm").write_bytes(bytes(b))
    rc, out, _ = ek_run(tmp_path / "flip.ekm")
    assert rc == 2 and "checksum mismatch" in out["error"]
    (tmp_path / "cut.ekm").write_bytes(bytes(b[:1000]))
    rc, out, _ = ek_run(tmp_path / "cut.ekm")
    assert rc == 2 and "truncated" in out["error"]


def test_help_prints_usage_and_exit_codes():
    for flag in ("--help", "-h"):
        r = subprocess.run([str(ek_run_path()), flag], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stderr == ""
        for opt in ("--graph", "--input", "--fill", "--seed", "--warmup", "--iters", "--threads",
                    "--isa", "--stream", "--output-dir", "--per-op", "--version"):
            assert f"\n  {opt}" in r.stdout, opt
        assert "exit codes: 0" in r.stdout


def test_output_dir_nested_and_all_or_none(model_path, tmp_path):
    out = tmp_path / "a" / "b" / "c"
    rc, res, _ = ek_run(model_path, "--output-dir", out, "--iters", 1)
    assert rc == 0 and (out / "logits.npy").is_file() and res["outputs"]["logits"]["file"]
    # A later failure (an existing directory where the output file must go) leaves nothing new.
    bad = tmp_path / "x" / "y"
    (bad / "logits.npy").mkdir(parents=True)
    rc, res, _ = ek_run(model_path, "--output-dir", tmp_path / "fresh" / "d", "--iters", 1)
    assert rc == 0
    rc, res, _ = ek_run(model_path, "--output-dir", bad, "--iters", 1)
    assert rc == 2 and res["error"]
    assert sorted(p.name for p in bad.iterdir()) == ["logits.npy"] and (bad / "logits.npy").is_dir()


FAKE_SSH = """#!/usr/bin/env bash
# ssh stand-in: the 'device' is this machine; host 'down' is unreachable.
while [ "$1" = -o ]; do shift 2; done
host="$1"; shift
echo "$host $*" >> "$FAKE_LOG"
[ "$host" = down ] && { echo "ssh: connect to host down: No route" >&2; exit 255; }
exec bash -c "$*"
"""
FAKE_SCP = """#!/usr/bin/env bash
args=()
for a in "$@"; do case "$a" in -q|-r) ;; *) args+=("${a#*:}") ;; esac; done
echo "scp $*" >> "$FAKE_LOG"
exec cp -r "${args[@]}"
"""


@pytest.fixture()
def fake_ssh(tmp_path):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("scp", FAKE_SCP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_LOG": str(tmp_path / "log"), "EK_RUN": str(ek_run_path()),
           "REMOTE_DIR": str(tmp_path / "re mote")}
    env.pop("EDGEKIT_ISA", None)
    (tmp_path / "re mote").mkdir()
    return env


def test_rpi4_script_uploads_inputs_quotes_and_fetches(model_path, tmp_path, fake_ssh):
    x = np.random.default_rng(5).standard_normal((1, 4, 16)).astype(np.float32)
    evil = tmp_path / "x $(touch PWNED); touch PWNED2.npy"
    np.save(evil, x)
    evil = evil.with_name(evil.name)  # np.save keeps a name that already ends in .npy
    r = subprocess.run([str(ROOT / "targets/rpi4/ek-run.sh"), "pi@board", str(model_path),
                        "--input", f"chunk={evil}", "--output-dir", str(tmp_path / "got"),
                        "--iters", "1"], capture_output=True, text=True, timeout=120, env=fake_ssh,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["graph"] == "step"
    np.testing.assert_array_equal(np.load(tmp_path / "got" / "logits.npy"),
                                  Session(model_path).step(x)["logits"])
    assert not list(tmp_path.rglob("PWNED*"))
    assert list((tmp_path / "re mote").iterdir()) == []  # the remote work dir is removed


def test_rpi4_script_unreachable_host_is_one_line(model_path, tmp_path, fake_ssh):
    r = subprocess.run([str(ROOT / "targets/rpi4/ek-run.sh"), "down", str(model_path)],
                       capture_output=True, text=True, timeout=60, env=fake_ssh)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "cannot reach down" in r.stderr


FAKE_ADB = """#!/usr/bin/env bash
echo "adb $*" >> "$FAKE_LOG"
case "$1" in
  get-state) [ -z "${FAKE_ADB_DOWN:-}" ] && echo device || { echo "error: no devices" >&2; exit 1; } ;;
  shell) shift; exec bash -c "$*" ;;
  push) cp "$2" "$3" ;;
  pull) cp -r "$2" "$3" ;;
esac
"""


def test_android_script_pushes_inputs_and_pulls_outputs(model_path, tmp_path, fake_ssh):
    (tmp_path / "fakebin" / "adb").write_text(FAKE_ADB)
    (tmp_path / "fakebin" / "adb").chmod(0o755)
    env = {**fake_ssh, "ANDROID_DIR": fake_ssh["REMOTE_DIR"]}
    x = np.random.default_rng(6).standard_normal((1, 4, 16)).astype(np.float32)
    np.save(tmp_path / "in put;touch PWNED.npy", x)
    args = [str(ROOT / "targets/android/ek-run.sh"), str(model_path), "--iters", "1",
            "--input", f"chunk={tmp_path / 'in put;touch PWNED.npy'}", "--output-dir", str(tmp_path / "got")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["graph"] == "step"
    np.testing.assert_array_equal(np.load(tmp_path / "got" / "logits.npy"),
                                  Session(model_path).step(x)["logits"])
    assert not list(tmp_path.rglob("PWNED*"))
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, env={**env, "FAKE_ADB_DOWN": "1"})
    assert r.returncode == 2 and r.stdout == "" and "no Android device reachable" in r.stderr


# -- edgekit run -----------------------------------------------------------------------------

def test_cli_run(model_path, tmp_path):
    x = np.random.default_rng(2).standard_normal((1, 8, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = CliRunner().invoke(cli, ["run", str(model_path), "--input", str(tmp_path / "x.npy"),
                                 "-o", str(tmp_path / "y.npy")])
    assert r.exit_code == 0, r.output
    assert "graph step" in r.output and "logits: float32 (1, 8, 5)" in r.output
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), Session(model_path).run(x)["logits"])


@pytest.mark.parametrize("make,match", [
    (lambda d, m: [str(d / "missing.ekm")], "no such file"),
    (lambda d, m: [str(m), "--input", str(d / "missing.npy")], "missing.npy: no such file"),
    (lambda d, m: [str(m), "--input", "nope=" + str(d / "x.npy")], "has no input 'nope'"),
    (lambda d, m: [str(m), "--input", str(d / "bad.npy")], "must have shape"),
    (lambda d, m: [str(m), "--input", str(d / "junk.npy")], "not a readable .npy"),
    (lambda d, m: [str(d / "junk.npy")], "bad magic"),
    (lambda d, m: [str(m), "--isa", "sse9"], "unknown ISA"),
])
def test_cli_run_errors(model_path, tmp_path, make, match):
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 16), np.float32))
    np.save(tmp_path / "bad.npy", np.zeros((1, 4, 15), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"x" * 100)
    out = tmp_path / "y.npy"
    r = CliRunner().invoke(cli, ["run", *make(tmp_path, model_path), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert match in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not out.exists()


@pytest.mark.parametrize("make_out,match", [
    (lambda d: str(d), "is a directory"),
    (lambda d: str(d / "model.ekm" / "y.npy"), "is not a directory"),
    (lambda d: str(d / "nonexist" / "y.npy"), "does not exist"),
])
def test_cli_run_bad_output_path(model_path, tmp_path, make_out, match):
    (tmp_path / "model.ekm").write_bytes(model_path.read_bytes())
    out = make_out(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(model_path), "-o", out])
    assert r.exit_code == 2, r.output
    assert match in r.output and r.output.count("\n") == 1 and "Traceback" not in r.output
    assert not (tmp_path / "nonexist").exists()


def test_cli_run_unwritable_output_is_one_line(model_path, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that ignores directory permissions")
        r = CliRunner().invoke(cli, ["run", str(model_path), "-o", str(ro / "y.npy")])
    finally:
        ro.chmod(0o700)
    assert r.exit_code == 2 and "cannot write" in r.output and r.output.count("\n") == 1


# -- static aarch64 build under qemu ------------------------------------------------------------

ARM_BUILD = ROOT / "build" / "aarch64"


def _arm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_ISA"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def arm_ek_run() -> Path:
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        msg = f"ARM toolchain missing: {', '.join(missing)}"
        if os.environ.get("EDGEKIT_REQUIRE_ARM") == "1":
            pytest.fail(msg + "; EDGEKIT_REQUIRE_ARM=1 makes this a failure")
        pytest.skip(msg)
    r = subprocess.run([str(ROOT / "targets" / "qemu" / "build.sh"), str(ARM_BUILD)], env=_arm_env(),
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        pytest.fail(f"cross build failed:\n{(r.stdout + r.stderr)[-4000:]}")
    binary = ARM_BUILD / "ek-run"
    head = binary.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    return binary


@pytest.fixture(scope="module")
def zoo_ekm(tmp_path_factory) -> Path:
    """A zoo model (tiny conformer, int8) exported by the real pipeline."""
    from edgekit.export.pipeline import ExportConfig, run_export

    out = tmp_path_factory.mktemp("zoo")
    run_export(ExportConfig(model="conformer", out=str(out), size="tiny", bits=8, calib=2, steps=1))
    return out / "model.ekm"


@pytest.mark.arm
@pytest.mark.parametrize("cpu,isa", [("cortex-a72", "neon"), ("cortex-a76", "neondot")])
def test_aarch64_ek_run_equals_host_session(arm_ek_run, zoo_ekm, tmp_path, cpu, isa):
    s = Session(zoo_ekm)
    name = s.inputs[0]["name"]
    x = np.random.default_rng(3).standard_normal(s.inputs[0]["shape"]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    want = s.step(x)
    rc, out, err = ek_run(zoo_ekm, "--input", f"{name}={tmp_path / 'x.npy'}", "--warmup", 0,
                          "--iters", 1, "--output-dir", tmp_path / "o", binary=arm_ek_run,
                          prefix=("qemu-aarch64", "-cpu", cpu), timeout=600)
    assert rc == 0, (out, err[-2000:])
    assert out["isa"] == isa
    for k, v in want.items():
        got = np.load(out["outputs"][k]["file"])
        # Same integer kernels (bit-exact across ISAs); float ops use each libm's expf/tanhf,
        # which may differ in the last ulp between glibc builds, so allow float noise only.
        np.testing.assert_allclose(got, v, rtol=1e-4, atol=1e-4 * float(np.abs(v).max()))


@pytest.mark.arm
def test_qemu_ek_run_script(arm_ek_run, model_path):
    r = subprocess.run([str(ROOT / "targets" / "qemu" / "ek-run.sh"), "cortex-a72", str(model_path),
                        "--iters", "1"], env=_arm_env() | {"EK_RUN": str(arm_ek_run)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["isa"] == "neon" and out["outputs"]["logits"]["shape"] == [1, 4, 5]
