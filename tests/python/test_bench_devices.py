"""Device profiles: the shipped ones load; broken ones give one line naming file and field."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from edgekit import devices


def test_shipped_profiles_load():
    assert {"rpi4", "android-a76", "x86-host"} <= set(devices.names())
    pi = devices.load("rpi4")
    assert pi["cpu"]["qemu_cpu"] == "cortex-a72" and "neondot" not in pi["cpu"]["isa"]
    assert pi["cpu"]["l1d_kib"] == 32 and pi["cpu"]["l2_kib"] == 1024
    assert "neondot" in devices.load("android-a76")["cpu"]["isa"]
    host = devices.load("x86-host")
    assert host["cpu"]["model"] != "detected" and host["cpu"]["cores"] >= 1


def _write(tmp_path, mutate):
    data = yaml.safe_load(open(devices.search_path()[-1] / "rpi4.yaml"))
    mutate(data)
    p = tmp_path / "dev.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d["cpu"].pop("cores"), "'cores' is a required property"),
    (lambda d: d["cpu"].update(cores="four"), "cpu.cores: 'four' is not of type 'integer'"),
    (lambda d: d["cpu"].update(freq_ghz=[2.0, 1.0]), "min 2.0 is above max 1.0"),
    (lambda d: d["cpu"].pop("qemu_cpu"), "cpu.qemu_cpu: required for an aarch64"),
    (lambda d: d["reach"].update(transport="carrier-pigeon"), "reach.transport"),
    (lambda d: d["cpu"].update(isa=["sse9"]), "cpu.isa.0"),
    (lambda d: d.update(extra=1), "'extra' was unexpected"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, mutate, msg):
    path = _write(tmp_path, mutate)
    with pytest.raises(ValueError) as e:
        devices.load(path)
    assert msg in str(e.value) and path in str(e.value) and "\n" not in str(e.value)


def test_unknown_name_and_bad_yaml(tmp_path):
    with pytest.raises(ValueError, match="unknown device 'mars'.*rpi4"):
        devices.load("mars")
    p = tmp_path / "x.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        devices.load(str(p))


def test_extra_profile_folder(tmp_path, monkeypatch):
    data = yaml.safe_load(open(devices.search_path()[-1] / "rpi4.yaml"))
    data["name"] = "pi-lab"
    (tmp_path / "pi-lab.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    assert "pi-lab" in devices.names() and devices.load("pi-lab")["name"] == "pi-lab"
    data["name"] = "other"
    (tmp_path / "pi-lab.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="must equal the file name"):
        devices.load("pi-lab")


def test_reachability():
    assert devices.reachable(devices.load("x86-host")) == (True, "this machine")
    ok, why = devices.reachable(devices.load("rpi4"))
    assert not ok and "not configured" in why
    p = devices.load("rpi4")
    p["reach"].update(host="127.0.0.1", port=1)
    ok, why = devices.reachable(p, timeout=1)
    assert not ok and "127.0.0.1:1" in why


def test_devices_cli_no_check():
    from edgekit.cli.main import cli

    r = CliRunner().invoke(cli, ["devices", "--no-check"])
    assert r.exit_code == 0 and "not checked" in r.output


def test_accelerator_profiles_point_to_the_simulator(tmp_path):
    p = tmp_path / "npu.yaml"
    p.write_text("kind: accelerator\nname: npu\n")
    with pytest.raises(ValueError, match="edgekit sim run MODEL.ekm --device npu"):
        devices.load(str(p))


def test_non_utf8_profile_names_the_file(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValueError) as e:
        devices.load(str(p))
    assert str(e.value) == f"{p}: not UTF-8 text"


def test_accelerators_share_the_search_path(tmp_path, monkeypatch):
    from edgekit.cli import sim
    from edgekit.devices import accelerator

    data = yaml.safe_load(open(devices.search_path()[-1] / "npu-int8.yaml"))
    data["name"] = "lab-npu"
    (tmp_path / "lab-npu.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("EDGEKIT_DEVICE_PATH", str(tmp_path))
    assert "lab-npu" in accelerator.names() and "lab-npu" not in devices.names()
    assert accelerator.load("lab-npu")["name"] == "lab-npu" and sim.is_accelerator("lab-npu")
    # edgekit.sim keeps importing the one implementation.
    from edgekit.sim import profile

    assert profile.load is accelerator.load


def test_cpu_profile_given_to_the_simulator():
    from edgekit.devices import accelerator

    with pytest.raises(ValueError) as e:
        accelerator.load("x86-host")
    assert str(e.value) == "x86-host is a CPU profile; use `edgekit bench --device x86-host`"


def test_accelerators_are_listed_and_known():
    from edgekit.cli.main import cli

    with pytest.raises(ValueError, match=r"known: .*rpi4.*npu-int8 \(accelerator, simulated\)"):
        devices.load("mars")
    r = CliRunner().invoke(cli, ["devices", "--no-check"])
    assert r.exit_code == 0, r.output
    rows = [ln for ln in r.output.splitlines() if "npu-int8" in ln or "ethos-u55-128" in ln]
    assert len(rows) == 2 and all("accelerator (simulated)" in ln for ln in rows), r.output
