"""`edgekit bench-kernels`: data, peer model builders checked against numpy, ratios, targets, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.bench.kernels import cases, table
from edgekit.bench.kernels.peer import Options
from edgekit.cli.main import cli

IMPL_NAMES = {"edgekit", "ort_matmulinteger", "ort_matmulnbits", "litert_fc", "torch_fp32"}


# ---------------------------------------------------------------- shapes and data

def test_default_shapes_file_matches_builtin_fallback():
    assert cases.parse_shapes_file(cases.DEFAULT_SHAPES_FILE) == list(cases.DEFAULT_SHAPES)


def test_shapes_file_accepts_comments_and_separators(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("# header\n\n1 64 32\n2,128,16  # trailing\n4x64x8\n")
    assert cases.parse_shapes_file(f) == [(1, 64, 32), (2, 128, 16), (4, 64, 8)]


@pytest.mark.parametrize("content, message", [
    ("1 64\n", "expected 'M K N'"),
    ("1 64 abc\n", "must be integers"),
    ("1 0 64\n", "must be in 1.."),
    ("# only comments\n", "no shapes found"),
    ("1 65536 65536\n", "too large"),
])
def test_bad_shapes_file_is_a_value_error_naming_the_line(tmp_path, content, message):
    f = tmp_path / "bad.txt"
    f.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        cases.parse_shapes_file(f)
    if "no shapes" not in message:
        assert "bad.txt:1" in str(info.value)


def test_case_has_exact_zero_fraction_and_consistent_reference():
    c = cases.make_case(3, 128, 40, bits=3, sparsity=0.75)
    assert c.mask is not None and (c.mask.sum(axis=1) == 32).all()  # 96 of 128 zero per row
    assert c.codes.max() < 8 and c.codebook.tolist() == [list(range(-4, 4))]
    assert (c.w[~c.mask] == 0).all()
    assert np.array_equal(c.w[c.mask], c.codebook[0][c.codes[c.mask]])
    assert np.array_equal(c.acc, c.x.astype(np.int64) @ c.w.astype(np.int64).T)
    again = cases.make_case(3, 128, 40, bits=3, sparsity=0.75)
    assert np.array_equal(again.codes, c.codes) and np.array_equal(again.x, c.x)


def test_time_calls_honours_min_time_and_min_iters():
    from edgekit.bench.kernels.timing import Budget, summarize_ns, time_calls

    calls = []
    ns = time_calls(lambda: calls.append(1), Budget(warmup=3, min_time_s=0.0, min_iters=7))
    assert len(ns) == 7 and len(calls) == 10 and (ns >= 0).all()
    import time

    t0 = time.perf_counter()
    ns = time_calls(lambda: None, Budget(warmup=0, min_time_s=0.02, min_iters=1))
    assert time.perf_counter() - t0 >= 0.02 and len(ns) > 100
    med, p90 = summarize_ns(np.array([1000, 2000, 3000, 4000, 100000]))
    assert med == 3.0 and 4.0 < p90 < 100.0
    with pytest.raises(ValueError):
        summarize_ns(np.array([]))


# ---------------------------------------------------------------- peers vs numpy

def test_ort_matmulinteger_is_exact():
    pytest.importorskip("onnxruntime")
    from edgekit.bench.kernels import ort_common, ort_matmulinteger as mi

    c = cases.make_case(3, 200, 24, bits=8, sparsity=0.5)
    p = mi.prepare(c, Options())
    p.call()
    y = p.output()
    assert y.dtype == np.int32 and np.array_equal(y, c.acc)
    assert mi.check(y, c) is None and mi.check(y + 1, c) is not None
    # The literal int8 x int8 form (a slower path in ORT) gives the same integers.
    sess = ort_common.session(mi.build_model(c.w, c.M, activations="int8"))
    assert np.array_equal(sess.run(None, {"A": c.x})[0], c.acc)


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("level, tol", [(0, 1e-5), (4, 1e-2)])
def test_ort_matmulnbits_matches_dequantized_float_product(bits, level, tol):
    pytest.importorskip("onnxruntime")
    from edgekit.bench.kernels import ort_common, ort_matmulnbits as nb

    rng = np.random.default_rng(bits)
    M, K, N, block = 2, 80, 24, 32  # K not a multiple of the block: padding is exercised
    codes = rng.integers(0, 1 << bits, size=(N, K)).astype(np.uint8)
    kblocks = -(-K // block)
    scales = rng.uniform(0.5, 2.0, size=(N, kblocks)).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    sess = ort_common.session(nb.build_model(codes, bits, M, block, level, scales))
    y = sess.run(None, {"A": x})[0]
    w = (codes.astype(np.float64) - (1 << (bits - 1))) * np.repeat(scales, block, axis=1)[:, :K]
    want = x.astype(np.float64) @ w.T
    err = np.linalg.norm(y - want) / np.linalg.norm(want)
    assert err < tol


def _litert_case(bits):
    return cases.make_case(2, 96, 40, bits=bits)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_litert_fc_equals_numpy_quantized_model_within_one_lsb(bits):
    pytest.importorskip("ai_edge_litert")
    from edgekit.bench.kernels import litert_fc as lt

    c = _litert_case(bits)
    q = lt.output_quant(c.acc)
    y = lt.run_once(lt.build_model(c.w, bits, c.M, q), c.x)
    want = lt.expected_output(c.acc, q)
    assert y.dtype == np.int8 and y.shape == want.shape
    assert np.abs(y.astype(int) - want.astype(int)).max() <= 1
    assert np.abs(want.astype(int)).max() >= 120  # the outputs use the int8 range
    assert lt.check(y, c, {"_quant": q}) is None


@pytest.mark.parametrize("bits", [4, 2])
def test_litert_wrongly_packed_subbyte_weights_are_caught(bits):
    pytest.importorskip("ai_edge_litert")
    from edgekit.bench.kernels import litert_fc as lt

    c = _litert_case(bits)
    q = lt.output_quant(c.acc)
    # LiteRT accepts the reversed order silently; only the output check can tell.
    y = lt.run_once(lt.build_model(c.w, bits, c.M, q, low_first=False), c.x)
    problem = lt.check(y, c, {"_quant": q})
    assert problem is not None and "LSB" in problem


def test_subbyte_packing_puts_the_first_element_in_the_low_bits():
    from edgekit.bench.kernels import litert_fc as lt

    assert lt.pack_subbyte(np.array([1, -2, 7], np.int8), 4) == bytes([0xE1, 0x07])
    assert lt.pack_subbyte(np.array([1, -2, -1, 0, 1], np.int8), 2) == bytes([0x39, 0x01])
    with pytest.raises(ValueError):
        lt.pack_subbyte(np.array([8], np.int8), 4)
    with pytest.raises(ValueError):
        lt.pack_subbyte(np.array([2], np.int8), 2)


# ---------------------------------------------------------------- ratios and targets

def _rec(impl, shape, bits, us, sparsity=0.0, wbytes=1000):
    M, K, N = shape
    return {"impl": impl, "M": M, "K": K, "N": N, "bits": bits, "sparsity": sparsity,
            "us_median": us, "us_p90": us * 1.1, "weight_bytes": wbytes}


def test_ratios_use_the_fastest_peer_that_can_hold_the_bit_width():
    s = (1, 1024, 4096)
    recs = table.annotate([
        _rec("edgekit", s, 8, 80.0), _rec("edgekit", s, 4, 40.0), _rec("edgekit", s, 2, 30.0),
        _rec("edgekit", s, 8, 50.0, sparsity=0.5),
        _rec("litert_fc", s, 8, 100.0), _rec("litert_fc", s, 4, 60.0),
        _rec("ort_matmulnbits", s, 2, 90.0), _rec("torch_fp32", s, 32, 400.0),
        _rec("litert_fc", s, 8, 100.0, sparsity=0.5),
    ])
    by = {(r["impl"], r["bits"], r["sparsity"]): r for r in recs}
    assert by["edgekit", 8, 0.0]["vs_best_peer"] == pytest.approx(0.8)
    assert by["edgekit", 8, 0.0]["best_peer"] == "litert_fc@8"
    assert by["edgekit", 4, 0.0]["vs_best_peer"] == pytest.approx(40 / 60)
    # int2 weights fit the int4 LiteRT model, which beats MatMulNBits at 2 bits here.
    assert by["edgekit", 2, 0.0]["vs_best_peer"] == pytest.approx(30 / 60)
    assert by["edgekit", 2, 0.0]["vs_edgekit_int4"] == pytest.approx(0.75)
    assert by["edgekit", 8, 0.5]["vs_edgekit_int8"] == pytest.approx(50 / 80)
    assert by["edgekit", 8, 0.5]["vs_best_peer"] == pytest.approx(0.5)
    assert by["torch_fp32", 32, 0.0]["vs_best_peer"] == pytest.approx(1.0)
    assert by["litert_fc", 8, 0.0]["gbps"] == pytest.approx(1000 / 100e3)


def test_targets_pass_and_miss():
    a, b = (1, 640, 2560), (1, 1024, 4096)
    recs = [
        _rec("edgekit", a, 8, 90.0), _rec("litert_fc", a, 8, 100.0),
        _rec("edgekit", b, 8, 120.0), _rec("litert_fc", b, 8, 100.0),  # 1.2x: MISS
        _rec("edgekit", a, 4, 50.0), _rec("litert_fc", a, 4, 60.0),
        _rec("edgekit", a, 2, 29.0), _rec("edgekit", a, 1, 26.0),      # 0.58 PASS, 0.52 MISS
        _rec("edgekit", b, 8, 80.0, sparsity=0.5),                      # 0.67 PASS
        _rec("edgekit", (8, 1024, 4096), 8, 999.0), _rec("litert_fc", (8, 1024, 4096), 8, 1.0),
    ]
    res = table.targets(recs)
    assert [r.status for r in res] == ["MISS", "PASS", "PASS", "MISS", "PASS"]
    assert "1.20x at 1x1024x4096" in res[0].text and "2 shapes" in res[0].text
    assert table.targets([])[0].status == "N/A"


# ---------------------------------------------------------------- CLI

TINY_SHAPES = Path(__file__).resolve().parents[2] / "csrc" / "bench" / "shapes" / "tiny.txt"


def test_cli_tiny_run_writes_checked_json_records(tmp_path):
    out = tmp_path / "out" / "bench.json"
    res = CliRunner().invoke(cli, ["bench-kernels", "--shapes", str(TINY_SHAPES),
                                   "--bits", "8,4,2", "--sparsity", "0,0.5",
                                   "--min-time", "0.005", "--json", str(out)])
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    assert isinstance(records, list) and records
    for r in records:
        assert {"impl", "M", "K", "N", "bits", "sparsity", "us_median", "us_p90",
                "weight_bytes"} <= set(r)
        assert r["impl"] in IMPL_NAMES and r["checked"] is True
        assert 0 < r["us_median"] <= r["us_p90"] * 1.0000001 and r["weight_bytes"] > 0
        assert (r["M"], r["K"], r["N"]) in {(1, 96, 48), (2, 128, 64)}
    names = {r["impl"] for r in records}
    for mod in ("onnxruntime", "ai_edge_litert", "torch"):
        pytest.importorskip(mod)
    assert {"ort_matmulinteger", "ort_matmulnbits", "litert_fc", "torch_fp32"} <= names
    assert all(r["accuracy_level"] == 4 for r in records if r["impl"] == "ort_matmulnbits")
    # Ratios in the file agree with the medians in the file.
    again = table.annotate([{k: r[k] for k in ("impl", "M", "K", "N", "bits", "sparsity",
                                                "us_median", "us_p90", "weight_bytes")}
                            for r in records])
    for r, a in zip(records, again):
        assert r["vs_best_peer"] == pytest.approx(a["vs_best_peer"])
    assert "PASS" in res.output or "MISS" in res.output or "N/A" in res.output


@pytest.mark.parametrize("args, message", [
    (["--shapes", "MISSING"], "cannot read shapes file"),
    (["--bits", "9"], "--bits values must be in 1..8"),
    (["--sparsity", "1.5"], "--sparsity values must be in [0, 1)"),
    (["--peers", "tflite"], "--peers: unknown tflite"),
    (["--min-time", "0"], "--min-time must be a number of seconds in (0, 60]"),
    (["--min-time", "abc"], "got 'abc'"),
    (["--isa", "bogus"], "--isa 'bogus'"),
    (["--shapes", "DIR"], "cannot read shapes file"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    where = {"MISSING": str(tmp_path / "missing.txt"), "DIR": str(tmp_path)}
    args = [where.get(a, a) for a in args]
    res = CliRunner().invoke(cli, ["bench-kernels", *args])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:") and message in lines[0]
    assert "Traceback" not in res.output


def test_cli_bad_shapes_content_is_one_line_exit_2(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("1 64 32\n1 x 2 3\n")
    res = CliRunner().invoke(cli, ["bench-kernels", "--shapes", str(f)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "s.txt:2" in res.output


def test_cli_missing_peer_package_is_skipped_with_a_note(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if not installed
    res = CliRunner().invoke(cli, ["bench-kernels", "--shapes", str(TINY_SHAPES),
                                   "--bits", "8", "--sparsity", "0", "--peers", "litert_fc",
                                   "--min-time", "0.002"])
    assert res.exit_code == 0, res.output
    assert "litert_fc skipped: needs ai-edge-litert" in res.output


def test_cli_wrong_peer_answer_is_not_reported(tmp_path, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    from edgekit.bench.kernels import litert_fc as lt

    # Fault injection: swap the INT4 nibbles, which LiteRT itself does not notice.
    good = lt.pack_subbyte
    monkeypatch.setattr(lt, "pack_subbyte", lambda w, bits, low_first=True: good(w, bits, False))
    out = tmp_path / "b.json"
    res = CliRunner().invoke(cli, ["bench-kernels", "--shapes", str(TINY_SHAPES),
                                   "--bits", "4", "--sparsity", "0", "--peers", "litert_fc",
                                   "--min-time", "0.002", "--json", str(out)])
    assert res.exit_code == 1
    assert "FAILED litert_fc 1x96x48 bits=4" in res.output and "wrong result" in res.output
    assert all(r["impl"] != "litert_fc" for r in json.loads(out.read_text()))


@pytest.mark.slow
def test_cli_quick_demo_covers_every_target(tmp_path):
    """The README demo: every implementation present, every target evaluated (not N/A)."""
    pytest.importorskip("edgekit._C")
    out = tmp_path / "q.json"
    res = CliRunner().invoke(cli, ["bench-kernels", "--quick", "--json", str(out)])
    assert res.exit_code == 0, res.output
    records = json.loads(out.read_text())
    assert {r["impl"] for r in records} == IMPL_NAMES
    assert {(r["M"], r["K"], r["N"]) for r in records} == set(cases.QUICK_SHAPES)
    verdicts = [ln.split()[0] for ln in res.output.splitlines()
                if ln.split() and ln.split()[0] in ("PASS", "MISS", "N/A")]
    assert len(verdicts) == 5 and "N/A" not in verdicts
