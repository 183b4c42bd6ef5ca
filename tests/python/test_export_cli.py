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
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    line = one_line_error(run("rnnt", "--bits", "8", "--calib", "1", "--steps", "1",
                              "-o", str(out)))
    assert "disk full" in line
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]   # the temp dir is gone too
