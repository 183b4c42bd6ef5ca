"""`edgekit bench` end to end on this machine: fake or real ek-run, the peers, CLI, schema."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.bench import estimate, harness, output, schema
from edgekit.cli.main import cli
from edgekit.export import ekm
from ekm_models import streaming_model, two_graph_model
from sshd import write_fake_ek_run

FAST = ["--min-time", "0", "--min-runs", "5", "--warmup", "1", "--quiet"]


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_EK_RUN", str(write_fake_ek_run(tmp_path / "ek-run")))
    d = tmp_path / "models"
    d.mkdir()
    ekm.write(streaming_model(), d / "small-int8.ekm")
    return d


def _bench(*args):
    r = CliRunner().invoke(cli, ["bench", *map(str, args)])
    return r


def test_bench_local_writes_valid_json_and_csv(model_dir, tmp_path):
    out = tmp_path / "out"
    r = _bench(model_dir, "--backend", "edgekit", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "small-int8.edgekit.x86-host.json")
    assert res["kind"] == "measured" and res["estimate"] is None
    assert len(res["samples_us"]) == res["stats"]["count"] == 5
    assert res["phases"]["load_us"] > 0 and res["phases"]["first_us"] > 0
    assert res["memory"]["model_file_bytes"] == (model_dir / "small-int8.ekm").stat().st_size
    assert res["memory"]["arena_bytes"] == 4096 and res["memory"]["peak_rss_kb"] > 0
    assert res["model"]["recipe"] == "mixed" and len(res["model"]["sha256"]) == 64
    # 4 feature frames of 10 ms per step (META streaming.chunk)
    assert res["streaming"]["chunk_ms"] == 40.0
    assert res["streaming"]["rtf"] == pytest.approx(res["stats"]["p50"] / 40_000)
    assert res["device"]["cpu"]["arch"] == "x86_64"
    r = _bench(model_dir, "--backend", "edgekit", "-o", out, "--per-op", *FAST[:-1])
    assert r.exit_code == 0 and "per-op time" in r.output and "fake.mm" in r.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0]["backend"] == "edgekit" and float(rows[0]["p50_us"]) > 0


def test_affinity_pins_ek_run(model_dir, tmp_path):
    import shutil

    if shutil.which("taskset") is None:
        pytest.skip("taskset not installed")
    out = tmp_path / "out"
    r = _bench(model_dir, "--backend", "edgekit", "--affinity", "0", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    assert schema.load(out / "small-int8.edgekit.x86-host.json")["flags"]["affinity"] == [0]


def test_repeat_writes_each_run_and_the_spread(model_dir, tmp_path):
    out = tmp_path / "out"
    r = _bench(model_dir, "--backend", "edgekit", "--repeat", "2", "-o", out, *FAST[:-1])
    assert r.exit_code == 0, r.output
    assert "run-to-run spread over 2 repeats" in r.output
    runs = [[schema.load(out / f"r{k}" / "small-int8.edgekit.x86-host.json")] for k in (1, 2)]
    p50s = [run[0]["stats"]["p50"] for run in runs]
    (row,) = output.spread(runs)
    assert row["repeats"] == 2
    assert row["spread"] == pytest.approx(abs(p50s[0] - p50s[1]) / (sum(p50s) / 2))


def test_ek_run_pilot_sizes_the_measured_run(model_dir, tmp_path):
    out = tmp_path / "out"
    r = _bench(model_dir, "--backend", "edgekit", "-o", out, "--min-runs", "3",
               "--min-time", "0.1", "--quiet")
    assert r.exit_code == 0, r.output
    res = schema.load(out / "small-int8.edgekit.x86-host.json")
    total_s = sum(res["samples_us"]) / 1e6
    assert total_s >= 0.05 and res["stats"]["count"] > 3  # min-time drove the count


def test_bench_bad_input_is_one_line_exit_2(model_dir, tmp_path):
    cases = [
        ([tmp_path / "nope.ekm"], "no such file"),
        ([model_dir, "--device", "mars"], "unknown device 'mars'"),
        ([model_dir, "--backend", "tvm"], "--backend takes"),
        ([model_dir, "--min-time", "5", "--max-time", "1"], "--max-time"),
        ([model_dir, "--affinity", "99"], "--affinity CPUs"),
        ([model_dir, "--backend", "onnxruntime"], "no model file matches"),
    ]
    for args, msg in cases:
        r = _bench(*args, "-o", tmp_path / "o", "--quiet")
        assert r.exit_code == 2, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output


def test_ek_run_error_json_becomes_edgekit_error(model_dir, tmp_path, monkeypatch):
    from edgekit import EdgekitError
    from edgekit.bench.backends.edgekit import parse_ek_run

    with pytest.raises(EdgekitError, match="bad magic"):
        parse_ek_run('{"error": "bad magic"}', 2)
    with pytest.raises(EdgekitError, match="without a JSON result: Segmentation"):
        parse_ek_run("", -11, "Segmentation fault")


def test_session_backend_against_the_contract(model_dir, tmp_path):
    """Session (issue 4) — measured in the child process when edgekit.runtime exists."""
    _need_runtime()

    out = tmp_path / "out"
    r = _bench(model_dir, "--backend", "session", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "small-int8.edgekit-session.x86-host.json")
    assert res["backend"]["runner"] == "edgekit.runtime.Session"
    assert res["memory"]["arena_bytes"] > 0 and res["per_op"]


def write_matmul_onnx(path: Path) -> None:
    """A one-MatMul ONNX model with a state: y = x·W, s:next = s + 1 (carried when streaming)."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 64], [0.01] * 4096)
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]),
         helper.make_node("Add", ["s", "one"], ["s:next"])], "g",
        [helper.make_tensor_value_info("x", f, [1, 64]),
         helper.make_tensor_value_info("s", f, [1])],
        [helper.make_tensor_value_info("y", f, [1, 64]),
         helper.make_tensor_value_info("s:next", f, [1])], [w, one])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, path)


def _need_runtime():
    try:
        from edgekit import runtime
    except ImportError:
        pytest.skip("edgekit.runtime not there yet")
    if not runtime.available():
        pytest.skip("edgekit._C built without the runtime (make build)")
    return runtime


def test_real_ek_run_on_a_hand_built_model(tmp_path, monkeypatch):
    runtime = _need_runtime()
    monkeypatch.delenv("EDGEKIT_EK_RUN", raising=False)
    try:
        runtime.ek_run_path()
    except Exception:
        pytest.skip("ek-run not built")
    ekm.write(streaming_model(), tmp_path / "m.ekm")
    out = tmp_path / "out"
    r = _bench(tmp_path / "m.ekm", "--backend", "edgekit", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "m.edgekit.x86-host.json")
    assert res["backend"]["runner"] == "ek-run" and res["memory"]["arena_bytes"] > 0
    assert {o["op"] for o in res["per_op"]} >= {"qlinear", "qlstm"}


def test_onnxruntime_backend_on_a_real_onnx_file(tmp_path):
    pytest.importorskip("onnxruntime")
    write_matmul_onnx(tmp_path / "mm.onnx")
    out = tmp_path / "out"
    r = _bench(tmp_path / "mm.onnx", "--backend", "onnxruntime", "--no-stream", "-o", out,
               *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "mm.onnxruntime.x86-host.json")
    assert res["backend"]["version"] and res["streaming"] is None
    assert res["backend"]["options"]["inputs"][0] == {"name": "x", "dtype": "float32",
                                                      "shape": [1, 64]}
    assert res["backend"]["options"]["carried_states"] == []  # --no-stream: not carried
    r = _bench(tmp_path / "mm.onnx", "--backend", "onnxruntime", "--chunk-ms", "10", "-o", out,
               *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "mm.onnxruntime.x86-host.json")
    assert res["backend"]["options"]["carried_states"] == ["s"]
    assert res["streaming"]["chunk_ms"] == 10.0


def test_litert_carries_the_graph_states(model_dir, tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgekit.export import tflite

    tflite.export(streaming_model(), model_dir / "small-int8.tflite")
    out = tmp_path / "out"
    r = _bench(model_dir / "small-int8.tflite", "--backend", "litert", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "small-int8.litert.x86-host.json")
    # State names come from the same-stem .ekm's graph (conv cache, LSTM h and c).
    assert res["backend"]["options"]["carried_states"] == ["conv.cache", "lstm.h", "lstm.c"]
    assert res["streaming"]["chunk_ms"] == 40.0


def test_litert_carries_the_states_of_a_per_graph_file(tmp_path):
    """A multi-graph model writes `<stem>.<graph>.tflite`: its states come from `<stem>.ekm`'s
    graph of that name (they were not carried at all before)."""
    pytest.importorskip("ai_edge_litert")
    from edgekit.bench.harness import _state_pairs
    from edgekit.export import ekm, tflite

    from edgekit.export import ir

    a, b = streaming_model(), two_graph_model()   # a graph with states + one without
    tensors = {**a.tensors, **{k: v for k, v in b.tensors.items() if k not in ("x", "W", "enc")}}
    m = ir.Model(tensors, {"step": a.graphs["step"], "predictor": b.graphs["predictor"]},
                 a.meta)
    ekm.write(m, tmp_path / "model.ekm")
    tflite.export(m, tmp_path / "model.tflite")
    pairs = _state_pairs(tmp_path / "model.step.tflite", None)
    assert pairs == [list(p) for p in m.graphs["step"].states] and pairs
    assert _state_pairs(tmp_path / "model.predictor.tflite", None) == []
    assert _state_pairs(tmp_path / "other.predictor.tflite", None) == []


def test_paced_mode_reports_lag(tmp_path):
    pytest.importorskip("onnxruntime")
    write_matmul_onnx(tmp_path / "mm.onnx")
    out = tmp_path / "out"
    r = _bench(tmp_path / "mm.onnx", "--backend", "onnxruntime", "--paced", "--chunk-ms", "5",
               "-o", out, "--min-time", "0", "--min-runs", "10", "--quiet")
    assert r.exit_code == 0, r.output
    res = schema.load(out / "mm.onnxruntime.x86-host.json")
    paced = res["streaming"]["paced"]
    assert len(paced["lag_us"]) == 10 and paced["keeps_up"]
    assert min(paced["lag_us"]) >= min(res["samples_us"]) * 0.5
    r = _bench(tmp_path / "mm.onnx", "--backend", "onnxruntime", "--paced", "-o", out, *FAST)
    assert r.exit_code == 2 and "--chunk-ms" in r.output


def test_torch_backend_skips_non_zoo_sources(model_dir, tmp_path):
    r = _bench(model_dir, "--backend", "torch", "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "no model file matches" in r.output


def test_estimate_known_macs_and_bytes():
    m = streaming_model()
    rpi4 = __import__("edgekit.devices", fromlist=["load"]).load("rpi4")
    e = estimate.estimate(m, rpi4)
    # qlinear 4·32·16 + qconv1d 96·4 + qlstm 4·(32·32 + 32·8) + linear 4·5·8
    assert e["macs"] == 2048 + 384 + 5120 + 160
    consts = sum(t.nbytes for t in m.tensors.values() if t.kind == "const")
    assert e["stored_bytes"] == consts
    assert e["assumptions"]["weights_resident_in_l2"]
    assert 0 < e["total_us"] < e["total_us_at_min_freq"]
    # The dotprod phone has 4x the int8 rate: the q-ops' compute time shrinks.
    a76 = __import__("edgekit.devices", fromlist=["load"]).load("android-a76")
    assert estimate.estimate(m, a76)["total_us"] < e["total_us"]
    with pytest.raises(ValueError, match="several graphs"):
        estimate.estimate(two_graph_model(), rpi4)
    assert estimate.estimate(two_graph_model(), rpi4, graph="encoder")["macs"] == 3 * 16 * 64


def test_unreachable_pi_gives_an_estimate_never_a_measurement(model_dir, tmp_path):
    out = tmp_path / "out"
    r = _bench(model_dir / "small-int8.ekm", "--device", "rpi4", "--backend", "edgekit",
               "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "small-int8.edgekit.rpi4.json")
    assert res["kind"] == "estimated" and res["samples_us"] == [] and res["stats"] is None
    assert res["estimate"]["method"] == "roofline" and res["estimate"]["total_us"] > 0
    assert any("not a measurement" in n for n in res["notes"])
    functional = res["estimate"]["functional"]
    if (Path(__file__).resolve().parents[2] / "build/aarch64/ek-run").is_file():
        # The real aarch64 runner ran under qemu -cpu cortex-a72: no dotprod, so neon.
        assert functional["ok"] and functional["isa"] == "neon", functional
    else:
        assert not functional["ok"] and "targets/qemu/build.sh" in functional["how"]
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["kind"] == "estimated" and row["p50_us"] == "" and float(row["estimate_us"]) > 0
    # The schema refuses an "estimated" result that carries samples.
    bad = dict(res, samples_us=[1.0])
    with pytest.raises(ValueError, match="samples_us"):
        schema.validate(bad)


def test_configured_but_unreachable_pi_falls_back_to_the_estimate(model_dir, tmp_path):
    import yaml

    from edgekit import devices

    prof = devices.load("rpi4")
    prof["reach"].update(host="127.0.0.1", port=1)
    p = tmp_path / "pi-off.yaml"
    p.write_text(yaml.safe_dump(dict(prof, name="pi-off")))
    out = tmp_path / "out"
    r = _bench(model_dir / "small-int8.ekm", "--device", p, "--backend", "edgekit", "-o", out,
               *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "small-int8.edgekit.pi-off.json")
    assert res["kind"] == "estimated"
    assert any("unreachable (ssh 127.0.0.1:1" in n for n in res["notes"])


def test_devices_command():
    r = CliRunner().invoke(cli, ["devices"])
    assert r.exit_code == 0, r.output
    for name in ("rpi4", "android-a76", "x86-host"):
        assert name in r.output


def test_report_and_compare(model_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _bench(model_dir, "--backend", "edgekit", "-o", a, *FAST).exit_code == 0
    assert _bench(model_dir / "small-int8.ekm", "--device", "rpi4", "--backend", "edgekit",
                  "-o", b, *FAST).exit_code == 0
    files = [a / "small-int8.edgekit.x86-host.json", b / "small-int8.edgekit.rpi4.json"]
    html = tmp_path / "r.html"
    r = CliRunner().invoke(cli, ["report", *map(str, files), "-o", str(html)])
    assert r.exit_code == 0, r.output
    text = html.read_text()
    assert text.count("data:image/png;base64,") == 3 and "ESTIMATED" in text
    r = CliRunner().invoke(cli, ["compare", str(files[0]), str(files[0]), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["significant"] is False
    r = CliRunner().invoke(cli, ["compare", str(files[0]), str(files[1])])
    assert r.exit_code == 2 and "estimate" in r.output
    (tmp_path / "junk.json").write_text('{"kind": "measured"}')
    r = CliRunner().invoke(cli, ["report", str(tmp_path / "junk.json"), "-o", str(html)])
    assert r.exit_code == 2 and "not an edgekit bench result" in r.output


def test_compare_detects_a_shift():
    from edgekit.bench import compare, stats

    base = json.loads(json.dumps(_synthetic(1000.0)))
    slower = _synthetic(1050.0)
    c = compare.compare(base, slower)
    assert c["significant"] and c["verdict"] == "second is slower"
    assert 40 < c["diff_ci95_us"][0] < 50 < c["diff_ci95_us"][1] < 60
    assert stats.summarize(slower["samples_us"])["p50"] == pytest.approx(1050, abs=3)


def _synthetic(center: float) -> dict:
    import numpy as np

    from edgekit.bench import stats

    rng = np.random.default_rng(int(center))
    s = list(center + rng.normal(0, 10, 300))
    return {"kind": "measured", "samples_us": s, "stats": stats.summarize(s),
            "device": {"profile": "x"}}


def test_output_file_names_are_safe():
    r = {"model": {"label": "../a b"}, "backend": {"name": "edgekit", "runner": "ek-run"},
         "device": {"profile": "x"}, "flags": {}}
    assert "/" not in output.file_name(r)


def test_find_models(tmp_path):
    (tmp_path / "a.ekm").write_bytes(b"")
    (tmp_path / "b.onnx").write_bytes(b"")
    (tmp_path / "c.txt").write_bytes(b"")
    assert [p.name for p in harness.find_models([str(tmp_path)])] == ["a.ekm", "b.onnx"]
    assert Path(harness.find_models([str(tmp_path / "a.ekm")])[0]).name == "a.ekm"


def test_find_models_returns_absolute_paths(tmp_path, monkeypatch):
    """Runners work in their own temp dirs: a relative model path must not reach them."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for arg in ("m", "m/a.onnx"):
        (p,) = harness.find_models([arg])
        assert p.is_absolute() and p == tmp_path / "m" / "a.onnx"


def test_unreachable_pi_with_the_default_backends(model_dir, tmp_path):
    """torch (a default backend) matches every .ekm of a zoo model; on an unreachable device
    it is dropped with a note and the edgekit estimate is still produced."""
    m = streaming_model()
    m.meta["source"] = {"model": "conformer", "size": "tiny", "seed": 0, "factory": None}
    ekm.write(m, tmp_path / "zoo.ekm")
    out = tmp_path / "out"
    r = _bench(tmp_path / "zoo.ekm", "--device", "rpi4", "-o", out, *FAST)
    assert r.exit_code == 0, r.output
    res = schema.load(out / "zoo.edgekit.rpi4.json")
    assert res["kind"] == "estimated"
    assert "torch skipped: rpi4 unreachable" in res["notes"]
    assert sorted(p.name for p in out.glob("*.json")) == ["zoo.edgekit.rpi4.json"]
    # Nothing left to estimate is still an error.
    r = _bench(tmp_path / "zoo.ekm", "--device", "rpi4", "--backend", "torch", "-o", out, *FAST)
    assert r.exit_code == 2 and "only the edgekit backend has an estimate" in r.output


def test_bad_ekm_error_names_the_file_once(model_dir, tmp_path):
    bad = tmp_path / "bad.ekm"
    bad.write_bytes(b"EKM1" + b"\0" * 60)
    r = _bench(bad, "--backend", "edgekit", "-o", tmp_path / "o", *FAST)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.count("bad.ekm") == 1, r.output
