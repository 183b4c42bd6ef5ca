"""Cross-check with Vela on a small int8 model (skipped without ethos-u-vela / LiteRT)."""

from __future__ import annotations

import numpy as np
import pytest

import ekm_models
from edgekit.export import ekm, ir
from edgekit.sim import profile, vela

pytestmark = pytest.mark.skipif(not vela.available(), reason="ethos-u-vela not installed")


def _two_fc() -> ir.Model:
    rng = np.random.default_rng(0)
    t = {"x": ir.Tensor("x", "f32", (1, 8, 256), "input"),
         "h": ir.Tensor("h", "f32", (1, 8, 512), "activation"),
         "y": ir.Tensor("y", "f32", (1, 8, 64), "output")}
    for name, n, k in (("big", 512, 256), ("small", 64, 512)):
        t[f"{name}.W"] = ir.Tensor(f"{name}.W", "packed", (n, k), "const",
                                   ekm_models.packed(rng, n, k, 8, affine=True))
    ops = [ir.Op("qlinear", "big", ["x", "big.W", None], ["h"], [0, 0], [0.02]),
           ir.Op("qlinear", "small", ["h", "small.W", None], ["y"], [0, 0], [0.05])]
    return ir.Model(t, {"step": ir.Graph("step", ops, ["x"], ["y"])}, {})


@pytest.mark.slow  # Vela alone takes ~20 s to start on the 2-core CI machine
def test_cross_check_small_model(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from edgekit.export import tflite

    model = _two_fc()
    ekm.write(model, tmp_path / "m.ekm")
    tflite.export(model, tmp_path / "m.tflite")
    r = vela.cross_check(tmp_path / "m.ekm", tmp_path / "m.tflite",
                         profile.load("ethos-u55-128"), work_dir=tmp_path)
    assert r["matched_layers"] == 2 == r["sim_mac_layers"]
    # The bar of docs/sim.md: same order of magnitude per layer, and the same ranking.
    for lay in r["layers"]:
        assert 0.1 < lay["ratio"] < 10, lay
    assert r["spearman"] == pytest.approx(1.0)
    assert r["vela_total_cycles"] > 0


def test_spearman():
    assert vela.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert vela.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert vela.spearman([1, 1], [1, 2]) is None
    assert vela._ranks([5, 1, 5]) == [1.5, 0.0, 1.5]


def test_missing_vela_section():
    prof = profile.load("npu-int8")
    with pytest.raises(ValueError, match="no vela section"):
        vela.run_vela("x.tflite", prof, ".")
