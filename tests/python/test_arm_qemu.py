"""ARM CI: cross-build the static aarch64 ek-test and run it under qemu-user.

-cpu cortex-a72 is the Raspberry Pi 4 (ARMv8.0, no sdot): dispatch must pick neon, refuse a
forced neondot, and the emulated CPU must really lack dotprod (the neondot variant dies of
SIGILL there), which is what makes "neon passed on cortex-a72" mean something.
-cpu cortex-a76 (Android class, ARMv8.2 + dotprod): dispatch must pick neondot, and both neon
and neondot are compared bit for bit with the reference.

qemu is used for correctness only; its timings mean nothing. Missing cross compiler or qemu:
skip, unless EDGEKIT_REQUIRE_ARM=1 (set by .ci/run), then fail.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.arm

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "aarch64"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")
CHECKED = re.compile(r"^checked (\S+): (\d+) passed, (\d+) failed$", re.M)
# Modest under emulation: the full deterministic sweep plus a few random cases.
QEMU_ARGS = ("--extra", "40")


def _env() -> dict[str, str]:
    """PATH with the virtualenv first (cmake, ninja), and no inherited EDGEKIT_ISA."""
    env = {k: v for k, v in os.environ.items() if k != "EDGEKIT_ISA"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _no_core_dumps() -> None:
    # qemu-user re-raises a guest SIGILL on itself; keep it from writing core files.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.fixture(scope="session")
def arm_ek_test() -> Path:
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        msg = (f"ARM toolchain missing: {', '.join(missing)} "
               "(apt-get install g++-aarch64-linux-gnu qemu-user)")
        if os.environ.get("EDGEKIT_REQUIRE_ARM") == "1":
            pytest.fail(msg + "; EDGEKIT_REQUIRE_ARM=1 makes this a failure")
        pytest.skip(msg)
    r = subprocess.run([str(ROOT / "targets" / "qemu" / "build.sh"), str(BUILD)], env=_env(),
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        pytest.fail(f"cross build failed:\n{(r.stdout + r.stderr)[-4000:]}")
    binary = BUILD / "ek-test"
    head = binary.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    return binary


def qemu(binary: Path, cpu: str, *args: str, isa: str | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = _env()
    if isa is not None:
        env["EDGEKIT_ISA"] = isa
    return subprocess.run(["qemu-aarch64", "-cpu", cpu, str(binary), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=_no_core_dumps)


def verdict(out: str) -> tuple[int, int, dict[str, tuple[int, int]]]:
    last = out.strip().splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, f"last line is not 'N passed, M failed': {last!r}"
    checked = {n: (int(p), int(f)) for n, p, f in CHECKED.findall(out)}
    return int(m.group(1)), int(m.group(2)), checked


def expected_checks(out: str) -> int:
    """Checks per variant: generated cases plus golden vectors."""
    cases = int(re.search(r"^cases: (\d+)", out, re.M).group(1))
    golden = re.search(r"^golden: (\d+) vectors", out, re.M)
    return cases + (int(golden.group(1)) if golden else 0)


def test_cortex_a72_selects_neon_and_matches_reference(arm_ek_test):
    r = qemu(arm_ek_test, "cortex-a72", "--expect-isa", "neon", *QEMU_ARGS)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "dispatch: linear -> isa=neon " in r.stdout
    assert re.search(r"^variant \S+__neondot\s+isa=neondot\s+skipped", r.stdout, re.M)
    _, failed, checked = verdict(r.stdout)
    n = expected_checks(r.stdout)
    assert failed == 0
    neon = [k for k in checked if k.endswith("__neon")]
    assert len(neon) == 1 and checked[neon[0]] == (n, 0)
    assert not any(k.endswith("__neondot") for k in checked)


def test_cortex_a72_refuses_forced_neondot(arm_ek_test):
    r = qemu(arm_ek_test, "cortex-a72", isa="neondot")
    assert r.returncode == 2
    assert "dispatch refused" in r.stdout
    assert "EDGEKIT_ISA" in r.stdout and "neondot" in r.stdout and "does not support" in r.stdout


def test_cortex_a72_really_lacks_dotprod(arm_ek_test, tmp_path):
    r = qemu(arm_ek_test, "cortex-a72", "--force-variant", "neondot", "--no-golden",
             "--extra", "0", cwd=tmp_path)
    assert r.returncode == -signal.SIGILL, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "CRASH (signal 04) while running" in r.stderr and "neondot" in r.stderr


def test_cortex_a76_selects_neondot_and_both_match_reference(arm_ek_test):
    r = qemu(arm_ek_test, "cortex-a76", "--expect-isa", "neondot", *QEMU_ARGS)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "dispatch: linear -> isa=neondot " in r.stdout
    _, failed, checked = verdict(r.stdout)
    n = expected_checks(r.stdout)
    assert failed == 0
    for suffix in ("__scalar", "__neon", "__neondot"):
        names = [k for k in checked if k.endswith(suffix)]
        assert len(names) == 1 and checked[names[0]] == (n, 0), (suffix, checked)


def test_golden_vectors_checked_under_qemu(arm_ek_test):
    golden = len(list((ROOT / "tests" / "golden").glob("*.ekpw")))
    if golden == 0:
        pytest.skip("no golden vectors in tests/golden")
    r = qemu(arm_ek_test, "cortex-a76", "--extra", "0")
    assert r.returncode == 0, r.stdout[-4000:]
    assert f"golden: {golden} vectors" in r.stdout


def test_qemu_run_script(arm_ek_test):
    env = _env() | {"EK_TEST": str(arm_ek_test), "EK_TEST_ARGS": "--extra 0 --no-golden"}
    r = subprocess.run([str(ROOT / "targets" / "qemu" / "run.sh")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "-cpu cortex-a72 --expect-isa neon" in r.stdout
    assert "-cpu cortex-a76 --expect-isa neondot" in r.stdout
    assert r.stdout.count(", 0 failed") >= 2


def test_sdot_only_in_dotprod_code(arm_ek_test):
    """Every function of the binary that contains sdot belongs to the neondot variant.

    The cortex-a72 run only executes the paths its cases reach; this covers all of them
    (and catches an ARMv8.2-compiled inline helper that the linker shared with neon code).
    """
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        pytest.fail("aarch64-linux-gnu-objdump missing (binutils-aarch64-linux-gnu)")
    r = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(arm_ek_test)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    owners, fn = set(), None
    for line in r.stdout.splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            fn = head.group(1)
        elif re.search(r"\tsdot\t", line):
            owners.add(fn)
    assert owners, "the neondot variant should contain sdot"
    stray = sorted(f for f in owners if "DotMac" not in f and "neondot" not in f)
    assert not stray, f"sdot outside the dotprod variant: {stray[:5]}"


def _fake_tools(tmp_path: Path, cpu: str) -> dict[str, str]:
    """Stand-ins for the device transports (adb; ssh and scp) that keep the device's files in
    tmp_path/dev and run its programs under qemu. Like old adb, the fake adb shell always
    exits 0, so the script must judge the run by its output."""
    dev, fakes = tmp_path / "dev", tmp_path / "bin"
    dev.mkdir()
    fakes.mkdir()
    run = f'qemu-aarch64 -cpu {cpu} "$@"'
    scripts = {
        "adb": f"""case "$1" in
  push) cp "$2" "{dev}/$(basename "$3")" ;;
  shell) shift; set -- ${{*//\\/data\\/local\\/tmp/{dev}}}
         if [ "$1" = chmod ]; then chmod "$2" "$3"; else {run} || true; fi ;;
esac""",
        "scp": f'[ "$1" = -q ] && shift; cp "$1" "${{2#*:}}"',
        "ssh": f'shift; set -- $*; {run}',
    }
    for name, body in scripts.items():
        (fakes / name).write_text(f"#!/usr/bin/env bash\nset -e\n{body}\n")
        (fakes / name).chmod(0o755)
    env = _env()
    env["PATH"] = f"{fakes}{os.pathsep}{env['PATH']}"
    env["REMOTE_DIR"] = str(dev)
    return env


def test_android_run_script_judges_by_output(arm_ek_test, tmp_path):
    env = _fake_tools(tmp_path, "cortex-a76") | {"EK_TEST": str(arm_ek_test)}
    script = str(ROOT / "targets" / "android" / "run.sh")
    ok = subprocess.run([script, "--extra", "0"], env=env, capture_output=True, text=True,
                        timeout=600)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "dispatch: linear -> isa=neondot " in ok.stdout
    # A failing run on the device must fail the script even though adb shell exits 0.
    bad = subprocess.run([script, "--extra", "0"], env=env | {"EXPECT_ISA": "neon"},
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "1 failed" in bad.stdout


def test_rpi4_run_script(arm_ek_test, tmp_path):
    env = _fake_tools(tmp_path, "cortex-a72") | {"EK_TEST": str(arm_ek_test)}
    r = subprocess.run([str(ROOT / "targets" / "rpi4" / "run.sh"), "pi@rpi4", "--extra", "0"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "dispatch: linear -> isa=neon " in r.stdout and "golden: disabled" in r.stdout
