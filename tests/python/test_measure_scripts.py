"""Smoke tests of scripts/measure_peers.py on the `tiny` Conformer (block-level peer comparison)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load(name):
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def peers():
    return _load("measure_peers")


def test_block_recipe_matches_what_the_block_gets_inside_the_model(peers):
    mixed = peers.block_recipe("mixed", "all")
    # @first/@last are the subsampling conv and the CTC head in the model, never block layers
    assert all(r.get("match") != ["@first", "@last"] for r in mixed["rules"])
    lin = peers.block_recipe("int4 uniform (g64)", "linear")
    assert lin["rules"][0] == {"type": "conv1d", "skip": True}
    # scoping works on a copy: the settings table shared with measure_compression is untouched
    peers.block_recipe("int4 Lloyd-Max (g64)", "linear")
    assert peers.SETTINGS["int4 Lloyd-Max (g64)"]["rules"][0].get("skip") is None


def test_rtn_symmetric_is_per_channel_round_to_nearest(peers):
    w = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    q = peers.rtn_symmetric(w, 4)
    scale = np.abs(w).max(1, keepdims=True) / 7
    codes = q / scale
    assert np.allclose(codes, np.round(codes), atol=1e-4)
    assert codes.min() >= -8 - 1e-4 and codes.max() <= 7 + 1e-4
    assert np.all(np.abs(q - w) <= scale / 2 + 1e-6)     # nearest level inside the range


def test_bad_arguments_are_one_line_usage_errors(peers, capsys):
    for argv in (["--size", "tiny", "--blocks", "9"], ["--settings", "int5 magic"],
                 ["--scopes", "convs"], ["--blocks", "a,b"], ["--size", "huge"],
                 ["--calib-batches", "0"], ["--seconds", "-1"]):
        with pytest.raises(SystemExit) as exc:
            peers.main(argv)
        assert exc.value.code == 2
        assert "error:" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # inside ORT's HQQ
def test_tiny_block_against_the_peers(peers, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx_ir")   # onnxruntime's MatMulNBits quantizer imports it
    pytest.importorskip("ai_edge_quantizer")
    out = tmp_path / "b.json"
    assert peers.main(["--size", "tiny", "--blocks", "1", "--scopes", "linear",
                       "--settings", "int8,int4 uniform (g64),int4 uniform (g64) + gptq",
                       "--calib-batches", "2", "--calib-seconds", "1", "--seconds", "1",
                       "--whole-model", "int4 uniform (g64)", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    whole = {r["method"]: r for r in data["whole_model"]}
    assert whole["ORT fp32 (no quantization)"]["model_snr_db"] > 80
    # the tiny model has 3 blocks x 8 Linears + the CTC head, all taken by MatMulNBits
    assert whole["ORT MatMulNBits 4-bit b128 asym (defaults)"]["matmulnbits_nodes"] == 25
    assert 0 < whole["edgekit int4 uniform (g64)"]["model_snr_db"] < 80
    rows = {r["method"]: r for r in data["blocks"]}
    # the exported fp32 block reproduces torch, so every peer error is the quantizer's own
    assert rows["ORT fp32 (no quantization)"]["block_snr_db"] > 80
    nbits = {b: rows[f"ORT MatMulNBits {b}-bit b32 asym"] for b in (2, 4, 8)}
    nbits["hqq"] = rows["ORT MatMulNBits 4-bit HQQ b32"]
    assert all(r["matmulnbits_nodes"] == 8 for r in nbits.values())   # the block's 8 Linears
    del nbits["hqq"]
    assert nbits[2]["block_snr_db"] < nbits[4]["block_snr_db"] < nbits[8]["block_snr_db"]
    assert rows["ORT MatMulNBits 4-bit b32 asym, accuracy_level 4"]["accuracy_level"] == 4
    assert rows["ORT MatMulNBits 4-bit b128 asym (defaults)"]["accuracy_level"] == 0
    aeq4 = rows["ai-edge-quantizer weight-only int4 channelwise"]
    assert not aeq4["emulated"] and aeq4["max_abs_diff_vs_emulation"] == 0.0
    assert any(r.get("emulated") for r in rows.values())   # int2 is labelled as emulated
    ours = {k: r for k, r in rows.items() if r["tool"] == "edgekit"}
    assert len(ours) == 3 and all(r["scope"] == "linear" for r in ours.values())
    for r in rows.values():
        if r["block_snr_db"] is not None and "fp32" not in r["method"]:
            assert 0 < r["block_snr_db"] < 80 and math.isfinite(r["block_snr_db"])
    assert ours["edgekit int8"]["block_snr_db"] > ours["edgekit int4 uniform (g64)"]["block_snr_db"]
