"""`edgekit inspect`: report contents, JSON, arena from the runtime, and one-line errors."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

import ekm_corrupt
import ekm_models
from edgekit.cli.main import cli
from edgekit.export import ekm


@pytest.fixture()
def model_path(tmp_path):
    path = tmp_path / "model.ekm"
    ekm.write(ekm_models.streaming_model(), path)
    return path


@pytest.fixture()
def no_runtime(monkeypatch):
    monkeypatch.setitem(sys.modules, "edgekit.runtime", None)  # import fails: not built


def _run(*args):
    return CliRunner().invoke(cli, ["inspect", *map(str, args)])


def test_text_report(model_path, no_runtime):
    r = _run(model_path)
    assert r.exit_code == 0, r.output
    out = r.output
    assert "source model    hand-built" in out and "recipe          mixed" in out
    assert "graph step: 10 ops, arena n/a (C++ runtime not built)" in out
    assert "inputs   chunk f32[1, 4, 16]" in out
    assert "states   conv.cache f32[1, 32, 2], lstm.h f32[1, 8], lstm.c f32[1, 8]" in out
    layer = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("encoder.")}
    assert layer["encoder.fc1"][1:] == ["qlinear", "32x16", "4", "dense", "1,168", "affine", "row"]
    assert layer["encoder.conv"][1:] == ["qconv1d", "32x3", "3", "dense", "1,152", "lut/row", "row"]
    assert "2:4" in out and "% zero" in out
    assert f"file bytes          {model_path.stat().st_size:,}" in out


def test_json_totals_match_the_file(model_path, no_runtime):
    r = _run(model_path, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    model = ekm.read(model_path)
    packed = [t for t in model.tensors.values() if t.dtype == "packed"]
    assert info["totals"]["file_bytes"] == model_path.stat().st_size
    assert info["totals"]["packed_buffer_bytes"] == sum(len(t.data) for t in packed)
    # §1.8 stored bytes: each serialized buffer minus its 64-byte header and section padding.
    assert 0 < sum(len(t.data) for t in packed) - info["totals"]["packed_weight_bytes"] \
        <= len(packed) * (64 + 4 * 63)
    assert info["totals"]["float_const_bytes"] == sum(
        t.nbytes for t in model.tensors.values() if t.kind == "const" and t.dtype == "f32")
    assert [r["bits"] for r in info["layers"]] == [4, 3, 8, 5, 32]
    assert info["graphs"][0]["arena_bytes"] is None
    assert info["metadata"]["streaming"]["graph"] == "step"


def test_arena_from_the_runtime(model_path, monkeypatch):
    seen = []

    class Session:  # the boundary: the C++ runtime's Python facade
        def __init__(self, path, graph=None):
            seen.append((path, graph))
            self.arena_bytes = 12345

    monkeypatch.setitem(sys.modules, "edgekit.runtime", types.SimpleNamespace(Session=Session))
    r = _run(model_path)
    assert r.exit_code == 0, r.output
    assert "graph step: 10 ops, arena 12,345 bytes" in r.output
    assert seen == [(str(model_path), "step")]


def test_real_runtime_arena_when_built(model_path):
    runtime = pytest.importorskip("edgekit.runtime")
    try:
        built = runtime.available()
    except Exception:  # noqa: BLE001 - a stale extension next to a newer facade
        built = False
    if not built:
        pytest.skip("the C++ runtime is not built")
    info = json.loads(_run(model_path, "--json").output)
    g = info["graphs"][0]
    assert isinstance(g["arena_bytes"], int) or g["arena_note"].startswith("n/a (runtime:")


@pytest.mark.parametrize("case", ["truncated", "flipped", "missing", "not ekm", "directory"])
def test_bad_file_is_one_line_exit_2(tmp_path, model_path, no_runtime, case):
    path = tmp_path / "bad.ekm"
    good = model_path.read_bytes()
    if case == "truncated":
        path.write_bytes(good[:777])
    elif case == "flipped":
        path.write_bytes(good[:900] + bytes([good[900] ^ 1]) + good[901:])
    elif case == "not ekm":
        path.write_text("hello\n" * 20)
    elif case == "directory":
        path = tmp_path
    r = _run(path)
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:"), r.output
    assert "Traceback" not in r.output


def test_every_corrupt_case_is_a_clean_cli_error(tmp_path, no_runtime):
    path = tmp_path / "c.ekm"
    for desc, data in list(ekm_corrupt.corrupt_cases())[::7]:
        path.write_bytes(data)
        r = _run(path)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, (desc, r.output)
