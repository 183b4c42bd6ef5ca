"""Simulator functional equality with the runtime, and the CLI (sim run/compare, bench)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import ekm_models
from edgekit.bench import schema
from edgekit.cli.main import cli
from edgekit.export import ekm
from edgekit.runtime import available

pytestmark = pytest.mark.skipif(not available(), reason="edgekit._C runtime not built (make build)")


@pytest.fixture()
def model_path(tmp_path):
    p = tmp_path / "stream.ekm"
    ekm.write(ekm_models.streaming_model(), p)
    return p


def test_functional_equals_runtime(model_path):
    from edgekit.runtime import Session
    from edgekit.sim import functional

    res = functional.check(model_path, steps=3, seed=5)
    assert res["ok"], res
    # The simulator's outputs are the runtime's: same feed through Session.run (whole
    # utterance from a reset state) gives the concatenated steps bit for bit.
    sim = functional.execute(model_path, steps=3, seed=5)
    feeds = functional.feeds(Session(str(model_path)).inputs, 3, 5)
    whole = Session(str(model_path)).run({"chunk": np.concatenate([f["chunk"] for f in feeds],
                                                                  axis=1)})
    assert np.array_equal(np.concatenate([s["logits"] for s in sim], axis=1), whole["logits"])
    assert np.abs(whole["logits"]).max() > 0
    other = functional.execute(model_path, steps=3, seed=6)
    assert functional.digest(sim) != functional.digest(other)
    assert functional.digest(sim) == res["outputs_sha256"]


def test_sim_run_and_compare(model_path, tmp_path):
    r = CliRunner().invoke(cli, ["sim", "run", str(model_path), "--json", str(tmp_path / "s.json"),
                                 "--csv", str(tmp_path / "s.csv")])
    assert r.exit_code == 0, r.output
    assert "SIMULATED" in r.output and "ok" in r.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["functional"]["ok"] and s["steady"]["cycles"] > 0
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [row["op"] for row in rows] == [lay["op"] for lay in s["layers"]]
    r = CliRunner().invoke(cli, ["sim", "compare", str(model_path), str(model_path),
                                 "--residency", "off"])
    assert r.exit_code == 0, r.output
    assert "+0.00" in r.output


def test_bench_device_npu_int8(model_path, tmp_path):
    out = tmp_path / "bench"
    r = CliRunner().invoke(cli, ["bench", str(model_path), "--device", "npu-int8", "-o", str(out),
                                 "--quiet"])
    assert r.exit_code == 0, r.output
    res = schema.load(out / "stream.edgekit.npu-int8.json")
    assert res["kind"] == "simulated" and res["estimate"]["method"] == "simulator"
    assert res["estimate"]["functional"]["ok"]
    assert res["estimate"]["total_us"] > 0 and res["samples_us"] == []
    layers = list(csv.DictReader((out / "stream.edgekit.npu-int8.layers.csv").open()))
    assert len(layers) == len(res["estimate"]["per_layer"])
    assert "simulated" in (out / "results.csv").read_text()
    # The report puts simulated runs in their own, labelled section.
    r = CliRunner().invoke(cli, ["report", str(out / "stream.edgekit.npu-int8.json"),
                                 "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert "SIMULATED" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("args, msg", [
    (["sim", "run", "missing.ekm"], "no such file"),
    (["sim", "run", "model.onnx"], "reads .ekm files"),
    (["sim", "run", "{m}", "--device", "nope"], "unknown accelerator profile"),
    (["sim", "run", "{m}", "--graph", "nope"], "no graph 'nope'"),
    (["sim", "run", "{bad}"], "bad.ekm"),
])
def test_cli_errors(args, msg, model_path, tmp_path):
    bad = tmp_path / "bad.ekm"
    bad.write_bytes(b"EKM1" + b"\0" * 60)
    args = [a.format(m=model_path, bad=bad) for a in args]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert msg in r.output and "Traceback" not in r.output


def test_bad_ekm_named_once(tmp_path):
    bad = tmp_path / "bad.ekm"
    bad.write_bytes(b"EKM1" + b"\0" * 60)
    r = CliRunner().invoke(cli, ["sim", "run", str(bad)])
    assert r.exit_code == 2 and r.output.count("bad.ekm") == 1, r.output


def test_bench_simulated_failure_leaves_no_partial_output(model_path, tmp_path):
    # The first model simulates fine, the second is corrupt: nothing may be written, not
    # even the first model's per-layer CSV.
    bad = tmp_path / "zz-bad.ekm"
    bad.write_bytes(b"EKM1" + b"\0" * 60)
    out = tmp_path / "bench"
    r = CliRunner().invoke(cli, ["bench", str(model_path), str(bad), "--device", "npu-int8",
                                 "-o", str(out), "--quiet"])
    assert r.exit_code == 2 and "zz-bad.ekm" in r.output, r.output
    assert not out.exists() or list(out.iterdir()) == []


def test_sim_on_a_cpu_profile_points_to_bench(model_path):
    r = CliRunner().invoke(cli, ["sim", "run", str(model_path), "--device", "x86-host"])
    assert r.exit_code == 2
    assert "x86-host is a CPU profile; use `edgekit bench --device x86-host`" in r.output
    assert "required property" not in r.output


def test_report_puts_simulated_beside_measured(model_path, tmp_path, monkeypatch):
    from edgekit.bench import report
    from sshd import write_fake_ek_run

    monkeypatch.setenv("EDGEKIT_EK_RUN", str(write_fake_ek_run(tmp_path / "ek-run")))
    fast = ["--min-time", "0", "--min-runs", "5", "--warmup", "1", "--quiet"]
    r = CliRunner().invoke(cli, ["bench", str(model_path), "--backend", "edgekit",
                                 "-o", str(tmp_path / "m"), *fast])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["bench", str(model_path), "--device", "npu-int8",
                                 "-o", str(tmp_path / "s"), "--quiet"])
    assert r.exit_code == 0, r.output
    meas = schema.load(tmp_path / "m" / "stream.edgekit.x86-host.json")
    sim = schema.load(tmp_path / "s" / "stream.edgekit.npu-int8.json")
    [row] = report.side_by_side([meas], [sim])
    by = sim["estimate"]["cycles_by_bound"]
    assert row["label"] == "stream" and row["measured_p50_us"] == meas["stats"]["p50"]
    assert row["measured_on"] == "edgekit · x86-host"
    assert row["simulated_us"] == sim["estimate"]["total_us"] and row["simulated_on"] == "npu-int8"
    assert row["dram_bytes_per_step"] == sim["estimate"]["dram_bytes_per_step"]
    assert by[row["binding"]] == max(by.values()) > 0
    # A simulated model nobody measured still gets its row, saying so.
    assert report.side_by_side([], [sim])[0]["measured_on"] == "not measured"
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "m" / "stream.edgekit.x86-host.json"),
                                 str(tmp_path / "s" / "stream.edgekit.npu-int8.json"),
                                 "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    table = page[page.index("SIMULATED beside MEASURED"):]
    assert "<th>measured_p50_us</th>" in table and "<th>binding</th>" in table
    assert f"<td>{meas['stats']['p50']:.4g}</td>" in table and f"<td>{row['binding']}</td>" in table
