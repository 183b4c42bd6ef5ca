"""`edgekit export`: outputs, report contents, one-line errors with exit 2, no partial files."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, ["export", *args])


def one_line_error(res):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), res.output
    return lines[0]


def test_export_rnnt_writes_model_and_report(tmp_path):
    out = tmp_path / "out"
    res = run("rnnt", "--bits", "8", "--calib", "1", "--steps", "2", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.ekm"]
    rep = json.loads((out / "export.json").read_text())
    assert rep["graphs"]["encoder"]["qlstm"] == 2 and rep["graphs"]["joiner"]["qlinear"] == 3
    ekm = rep["formats"]["ekm"]
    assert ekm["file_bytes"] == (out / "model.ekm").stat().st_size
    assert ekm["backend"] in ("runtime", "interpreter")
    assert set(ekm["parity"]) == {"encoder", "predictor", "joiner"}
    assert float(ekm["worst_snr_vs_compressed_db"]) >= 40
    assert ekm["size_check"]["ok"]
    assert all(r["bits"] == 8 and r["bytes"] > 0 for r in rep["layers"])
    assert "parity" in res.output and "encoder.layers.0.weight_ih_l0" in res.output
    # the file reads back with the EKM reader and keeps the export metadata
    from edgekit.export import ekm as ekm_io
    m = ekm_io.read(out / "model.ekm")
    assert m.meta["source"]["model"] == "rnnt" and m.meta["recipe"]["name"] == "int8"
    assert m.meta["streaming"]["graph"] == "encoder"


USER_MODULE = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(80, 32, 3, padding=1)
        self.bn = nn.BatchNorm1d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x.transpose(1, 2))))
        return self.fc(h.transpose(1, 2))

def make():
    torch.manual_seed(0)
    return Net()

def not_a_module():
    return 3
"""


@pytest.fixture
def user_file(tmp_path):
    p = tmp_path / "net.py"
    p.write_text(textwrap.dedent(USER_MODULE))
    return p


def test_export_user_module(tmp_path, user_file):
    out = tmp_path / "u"
    res = run(f"{user_file}:make", "--input-shape", "1,20,80", "--bits", "4", "--calib", "1",
              "--steps", "1", "-o", str(out))
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "export.json").read_text())
    assert rep["graphs"]["forward"]["qconv1d"] == 1 and rep["graphs"]["forward"]["qlinear"] == 1
    assert float(rep["formats"]["ekm"]["worst_snr_vs_compressed_db"]) >= 30


@pytest.mark.parametrize("args,needle", [
    (["nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["conformer", "--bits", "9"], "--bits must be an int in 1..8"),
    (["conformer", "--bits", "4", "--recipe", "int8"], "not both"),
    (["conformer", "--recipe", "/nonexistent.yaml"], "no such recipe"),
    (["conformer", "--format", "ekm,pdf"], "unknown format 'pdf'"),
    (["conformer", "--nm", "4:2"], "--nm needs 1 <= N < M"),
    (["conformer", "--nm", "x"], "--nm must look like N:M"),
    (["conformer", "--sparsity", "1.5"], "--sparsity must be in [0, 1)"),
    (["conformer", "--calib", "0"], "--calib must be a positive int"),
    (["conformer", "--input-shape", "1,2"], "--input-shape is only for a user module"),
    (["/no/such/file.py:make", "--input-shape", "1,2"], "no such file"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    out = tmp_path / "o"
    line = one_line_error(run(*args, "-o", str(out)))
    assert needle in line
    assert not out.exists()


def test_bad_user_module(tmp_path, user_file):
    out = tmp_path / "o"
    assert "needs --input-shape" in one_line_error(run(f"{user_file}:make", "-o", str(out)))
    assert "not a torch nn.Module" in one_line_error(
        run(f"{user_file}:not_a_module", "--input-shape", "1,20,80", "-o", str(out)))
    assert "has no callable 'nope'" in one_line_error(
        run(f"{user_file}:nope", "--input-shape", "1,20,80", "-o", str(out)))
    assert "forward on input" in one_line_error(
        run(f"{user_file}:make", "--input-shape", "1,20,7", "-o", str(out)))
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{match: '*', bits: 99}]\n")
    assert "bits" in one_line_error(run("rnnt", "--recipe", str(bad), "-o", str(out)))
    assert not out.exists()


def test_failure_leaves_no_partial_output(tmp_path, monkeypatch):
    """A writer that dies half-way (the boundary) leaves neither model.ekm nor export.json."""
    from edgekit import EdgekitError
    from edgekit.export import ekm

    def broken_write(model, path):
        with open(path, "wb") as f:
            f.write(b"EKM1 half")
        raise EdgekitError("disk full")

    monkeypatch.setattr(ekm, "write", broken_write)
    out = tmp_path / "out"
    out.mkdir()   # an earlier export: it must survive a failed one untouched
    (out / "export.json").write_text("{}")
    (out / "model.ekm").write_bytes(b"old")
    line = one_line_error(run("rnnt", "--bits", "8", "--calib", "1", "--steps", "1",
                              "-o", str(out)))
    assert "disk full" in line
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.ekm"]
    assert (out / "model.ekm").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]   # the temp dir is gone too


def test_reexport_replaces_the_directory(tmp_path, user_file):
    """Re-exporting with fewer formats leaves no stale file of the earlier run."""
    out = tmp_path / "u"
    args = [f"{user_file}:make", "--input-shape", "1,20,80", "--bits", "8", "--calib", "1",
            "--steps", "1", "-o", str(out)]
    assert run(*args, "--format", "ekm,onnx").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.ekm", "model.onnx"]
    res = run(*args, "--format", "ekm")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.ekm"]
    assert list(json.loads((out / "export.json").read_text())["formats"]) == ["ekm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "u"]   # no .old/.tmp left


def test_output_dir_that_is_not_an_export_is_refused(tmp_path, monkeypatch):
    """DIR is replaced as a whole, so a non-empty directory that is not an earlier export (no
    export.json) is refused before any work, and so are a file and the current directory."""
    from edgekit.export import pipeline

    def no_compress(*a, **k):
        raise AssertionError("compress must not run")
    monkeypatch.setattr("edgekit.compress.compress", no_compress)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    assert "without export.json" in one_line_error(run("rnnt", "-o", str(other)))
    assert (other / "a.jpg").read_bytes() == b"x"
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file" in one_line_error(run("rnnt", "-o", str(f)))   # click checks it
    link = tmp_path / "link"
    link.symlink_to(other)
    assert "symbolic link" in one_line_error(run("rnnt", "-o", str(link)))
    monkeypatch.chdir(other)
    assert "current directory" in one_line_error(run("rnnt", "-o", "."))
    assert "current directory" in one_line_error(run("rnnt", "-o", str(tmp_path)))
    assert pipeline.check_formats(["ekm"]) == ("ekm",)


@pytest.mark.parametrize("fmt,missing", [("onnx", "onnxruntime"), ("onnx", "onnx"),
                                         ("tflite", "ai_edge_litert")])
def test_missing_format_package_is_reported_up_front(tmp_path, monkeypatch, fmt, missing):
    import importlib.util
    real = importlib.util.find_spec

    def find_spec(name, *a, **k):
        return None if name == missing else real(name, *a, **k)

    def no_compress(*a, **k):
        raise AssertionError("compress must not run")
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr("edgekit.compress.compress", no_compress)
    out = tmp_path / "o"
    line = one_line_error(run("rnnt", "--format", f"ekm,{fmt}", "-o", str(out)))
    assert f"format {fmt} needs the Python package(s) {missing}" in line and "pip install" in line
    assert not out.exists()


def test_export_rnnt_onnx(tmp_path):
    """`--format ekm,onnx`: one ONNX file per graph, their sizes summed, onnxruntime parity."""
    out = tmp_path / "out"
    res = run("rnnt", "--bits", "4", "--calib", "1", "--steps", "2", "--format", "ekm,onnx",
              "-o", str(out))
    assert res.exit_code == 0, res.output
    files = [out / f"model.{g}.onnx" for g in ("encoder", "predictor", "joiner")]
    assert all(f.is_file() for f in files)
    rep = json.loads((out / "export.json").read_text())
    onnx = rep["formats"]["onnx"]
    assert onnx["file_bytes"] == sum(f.stat().st_size for f in files)
    assert onnx["backend"] == "onnxruntime" and onnx["ort_accuracy_level"] == 0
    assert set(onnx["parity"]) == {"encoder", "predictor", "joiner"}
    assert float(onnx["worst_snr_vs_compressed_db"]) >= 40
    assert onnx["emitter_report"]["flavor"] == "qdq"
    # the parity table's onnx row: format, backend, file bytes
    cells = [[c.strip() for c in ln.split("│")[1:4]] for ln in res.output.splitlines()]
    assert ["onnx", "onnxruntime", f"{onnx['file_bytes']:,}"] in cells, res.output


def test_onnx_flavor_option(tmp_path, user_file):
    """--onnx-flavor ort reaches the ONNX emitter (MatMulNBits for the 4-bit linear layer)."""
    import onnx as onnx_pkg
    out = tmp_path / "u"
    res = run(f"{user_file}:make", "--input-shape", "1,20,80", "--bits", "4", "--calib", "1",
              "--steps", "1", "--format", "onnx", "--onnx-flavor", "ort", "-o", str(out))
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "export.json").read_text())
    assert rep["formats"]["onnx"]["emitter_report"]["flavor"] == "ort"
    ops = {n.op_type for f in out.glob("*.onnx") for n in onnx_pkg.load(str(f)).graph.node}
    assert "MatMulNBits" in ops
    assert "--onnx-flavor" in one_line_error(run("rnnt", "--onnx-flavor", "qq", "-o", str(out)))


def test_layer_bytes_are_the_stored_bytes_inspect_shows(tmp_path, user_file):
    """The export table's bytes are the §1.8 stored bytes of the tensor in the file."""
    from edgekit.export import ekm as ekm_io
    from edgekit.kernels import packing
    out = tmp_path / "u"
    assert run(f"{user_file}:make", "--input-shape", "1,20,80", "--bits", "3", "--calib", "1",
               "--steps", "1", "-o", str(out)).exit_code == 0
    rep = json.loads((out / "export.json").read_text())
    m = ekm_io.read(out / "model.ekm")
    stored = {n: packing.deserialize(bytes(t.data)).nbytes for n, t in m.tensors.items()
              if t.dtype == "packed"}
    assert {r["name"]: r["bytes"] for r in rep["layers"]} == stored
    assert all(r["serialized_bytes"] > r["bytes"] for r in rep["layers"])


GRU_MODULE = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(16, 8, batch_first=True)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])

def make():
    return Net()
"""


def test_unsupported_rnn_is_one_line_without_torch_warning(tmp_path):
    """torch.export warns about a GRU's `_flat_weights` before the one-line error; every
    warning is recorded here ("always"), so one that escapes the capture would show."""
    import warnings
    p = tmp_path / "gru.py"
    p.write_text(textwrap.dedent(GRU_MODULE))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = one_line_error(run(f"{p}:make", "--input-shape", "1,5,16", "-o",
                                  str(tmp_path / "o")))
    assert line == "edgekit: error: unsupported op aten.gru.input at rnn"
    assert not [w for w in caught if "_flat_weights" in str(w.message)]


def test_export_qat_checkpoint_keeps_its_codes(tmp_path):
    """A checkpoint of `edgekit train --qat` exports with the trained codes, codebooks and
    scales bit for bit: compress is skipped, only activations are calibrated."""
    import numpy as np
    import torch

    from edgekit import models
    from edgekit.compress.qat import prepare
    from edgekit.export import ekm as ekm_io
    from edgekit.kernels import packing
    from edgekit.train.loop import save_checkpoint
    model = models.build("conformer", "tiny", pretrained=False)
    _, _, cbs = prepare("gq", model, "gq-5bit", steps=2)
    cbs[-1].on_end(model)        # what the training loop calls after the last step
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, model, {"model": "conformer", "size": "tiny", "qat": "gq",
                                  "recipe": "gq-5bit"}, step=2)
    out = tmp_path / "out"
    res = run(str(ckpt), "--format", "ekm,onnx", "--calib", "1", "--steps", "1", "-o", str(out))
    assert res.exit_code == 0, res.output
    state = model.state_dict()
    m = ekm_io.read(out / "model.ekm")
    packed = {n: t for n, t in m.tensors.items() if t.dtype == "packed"}
    names = {k[:-len(".codes")].replace(".matrices.", ".") for k in state
             if k.endswith(".codes")}
    assert names and names <= set(packed)
    for name in names:
        layer, _, p = name.rpartition(".")
        codes, codebook, scale, _ = packing.unpack_arrays(packing.deserialize(
            bytes(packed[name].data)))
        assert np.array_equal(codes, state[f"{layer}.matrices.{p}.codes"].numpy())
        # a per-tensor table is stored 1-D in the file, (1, L) in the layer
        assert np.array_equal(codebook.ravel(), state[f"{layer}.matrices.{p}.codebook"].ravel())
        assert np.array_equal(scale.ravel(), state[f"{layer}.matrices.{p}.scale"].ravel())
    rep = json.loads((out / "export.json").read_text())
    assert rep["recipe"] == "qat-gq:gq-5bit" and m.meta["source"]["qat"] == "gq"
    assert float(rep["formats"]["ekm"]["worst_snr_vs_compressed_db"]) >= 30
    assert "onnx" in rep["formats"]
    line = one_line_error(run(str(ckpt), "--bits", "4", "-o", str(tmp_path / "o2")))
    assert "already quantized" in line
    line = one_line_error(run(str(ckpt), "--size", "small", "-o", str(tmp_path / "o2")))
    assert "holds a conformer tiny checkpoint" in line
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {}}, tmp_path / "bare.pt")
    line = one_line_error(run(str(tmp_path / "bare.pt"), "-o", str(tmp_path / "o2")))
    assert "does not say which zoo model" in line
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"model": "conformer"}},
               tmp_path / "wrong.pt")
    line = one_line_error(run(str(tmp_path / "wrong.pt"), "-o", str(tmp_path / "o2")))
    assert "weights do not fit conformer tiny: Missing key" in line


def test_export_rnnt_tflite_full_integer_and_its_options(tmp_path):
    """`--format tflite`: full-integer files by default (int8 I/O), the summary line says so;
    `--tflite-io float` / `--tflite-float-ops` reach the exporter."""
    pytest.importorskip("ai_edge_litert.interpreter")
    out = tmp_path / "out"
    res = run("rnnt", "--bits", "8", "--calib", "1", "--steps", "2", "--format", "tflite",
              "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "tflite: full-integer, 0 float op(s) left" in res.output
    graphs = json.loads((out / "export.json").read_text())["formats"]["tflite"][
        "emitter_report"]["graphs"]
    assert all(g["full_integer"] and g["io"] == "int8" and g["float_ops"] == {}
               for g in graphs.values())
    out2 = tmp_path / "out2"
    res = run("rnnt", "--bits", "8", "--calib", "1", "--steps", "2", "--format", "tflite",
              "--tflite-io", "float", "-o", str(out2))
    assert res.exit_code == 0, res.output
    graphs = json.loads((out2 / "export.json").read_text())["formats"]["tflite"][
        "emitter_report"]["graphs"]
    assert all(g["io"] == "float" for g in graphs.values())
    out3 = tmp_path / "out3"
    res = run("rnnt", "--bits", "8", "--calib", "1", "--steps", "2", "--format", "tflite",
              "--tflite-float-ops", "-o", str(out3))
    assert res.exit_code == 0, res.output
    assert "integer layers, float between them" in res.output
    res = run("rnnt", "--format", "tflite", "--tflite-norm-bits", "12", "-o", str(tmp_path / "x"))
    assert res.exit_code == 2 and "12" in res.output


def test_onnxruntime_refusing_the_file_is_one_line_exit_2(tmp_path, user_file, monkeypatch):
    """onnxruntime rejecting the written file (e.g. the INT2 QLinearConv fusion of 1.32,
    docs/export-onnx.md) is a one-line error with exit 2, not a traceback, and leaves nothing."""
    ort = pytest.importorskip("onnxruntime")
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph

    def refuse(path, *args, **kwargs):
        raise InvalidGraph("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. "
                           "Type Error: Type 'tensor(int2)' of input parameter (#7) of operator "
                           "(QLinearConv) in node (conv#11) is invalid.\nsecond line")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    out = tmp_path / "u"
    line = one_line_error(run(f"{user_file}:make", "--input-shape", "1,20,80", "--bits", "2",
                              "--calib", "1", "--steps", "1", "--format", "onnx",
                              "-o", str(out)))
    assert "onnx parity check of graph" in line and "onnxruntime cannot load model.onnx" in line
    assert "(QLinearConv) in node (conv#11) is invalid." in line and "second line" not in line
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["net.py"]
