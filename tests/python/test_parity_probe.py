"""scripts/parity_probe.py on the tiny Conformer at int8: the probe's op-by-op torch
recomputation is faithful, the compressed model's q-ops equal the runtime's bit for bit on the
runtime's own inputs, and what is left between them is the float ops' last bits (docs/export.md,
"Parity and what limits it")."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def probe():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("parity_probe", SCRIPTS / "parity_probe.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(SCRIPTS))
    return mod


@pytest.fixture(scope="module")
def built(probe):
    return probe.build("conformer", "tiny", "int8", 2)


def test_every_op_through_torch_reproduces_the_compressed_model(probe, built):
    """Variant C computes every float op and q-op with torch on the IR's own tensors: if a
    mapping in `torch_op` were wrong (layout, padding, axis) this would not be bit-exact."""
    pytest.importorskip("edgekit._C")
    res = probe.what_if("conformer", "tiny", "int8", 2, 2, variants="C", built=built, quiet=True)
    assert res and all(math.isinf(r["C"]) and r["C"] > 0 for r in res.values()), res


def test_runtime_meets_the_bar_against_an_exact_accumulation_reference(probe, built):
    """Variant A (torch float ops, int32-exact q-ops) is the reference a packed int8 runtime
    can be held to; the C++ runtime must stay within the issue's 40 dB of it."""
    from edgekit.runtime import available
    if not available():
        pytest.skip("C++ runtime not built")
    res = probe.what_if("conformer", "tiny", "int8", 2, 3, variants="A", built=built, quiet=True)
    assert res and all(r["D"] >= 40 for r in res.values()), res


def test_q_ops_equal_the_runtime_on_its_own_inputs(probe, built):
    """The calibrated compressed layers compute the runtime's integer arithmetic: recomputed
    by torch from the runtime's inputs, no qlinear/qconv1d element may differ."""
    from edgekit.runtime import available
    if not available():
        pytest.skip("C++ runtime not built")
    res = probe.probe("conformer", "tiny", "int8", 2, 2, built=built, quiet=True)
    rows = [r for g in res.values() for t, r in g.items() if t in ("qlinear", "qconv1d")]
    assert rows and all(r[0] > 0 for r in rows), res
    assert all(r[1] == 0 for r in rows), res
