"""The C++ runtime through `edgekit.runtime.Session` (docs/runtime.md): loading, the streaming
contract (step / run / reset / state), the planner's numbers, threads and ISA choice, input
checks, and end to end against the numpy interpreter and the compressed torch model."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ekm_models
from edgekit import EdgekitError
from edgekit.export import ekm, ir
from edgekit.export.interp import Interpreter
from edgekit.runtime import RuntimeModelError, Session, available, ek_run_path

pytestmark = pytest.mark.skipif(not available(), reason="edgekit._C runtime not built (make build)")


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    """(path, ir.Model) of the hand-built streaming model (q-ops, conv cache, LSTM state)."""
    model = ekm_models.streaming_model()
    path = tmp_path_factory.mktemp("rt") / "streaming.ekm"
    ekm.write(model, path)
    return path, model


@pytest.fixture(scope="module")
def two_graphs(tmp_path_factory):
    model = ekm_models.two_graph_model()
    path = tmp_path_factory.mktemp("rt") / "two.ekm"
    ekm.write(model, path)
    return path, model


def chunks(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 4, 16)).astype(np.float32) for _ in range(n)]


def test_describes_graph(streaming):
    path, model = streaming
    s = Session(path)
    assert s.graph == "step"
    assert s.inputs == [{"name": "chunk", "dtype": "f32", "shape": (1, 4, 16)}]
    assert s.outputs == [{"name": "logits", "dtype": "f32", "shape": (1, 4, 5)}]
    assert [d["name"] for d in s.states] == ["conv.cache", "lstm.h", "lstm.c"]
    assert s.state_bytes == 4 * (32 * 2 + 8 + 8)
    # The arena holds every activation and op scratch: reuse makes it smaller than their sum,
    # and it can never be smaller than the largest activation.
    acts = [t.numel * 4 for t in model.tensors.values() if t.kind == "activation"]
    assert max(acts) <= s.arena_bytes <= s.naive_bytes
    assert s.arena_bytes < s.naive_bytes
    assert s.arena_bytes % 64 == 0


def test_steps_match_interpreter(streaming):
    """Same int8 rounding rule and kernels: the runtime follows the numpy reference."""
    path, model = streaming
    s, it = Session(path), Interpreter(model)
    for x in chunks(5):
        got = s.step(x)["logits"]
        want = it.step({"chunk": x})["logits"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for name, v in s.state().items():
        np.testing.assert_allclose(v, it.state[name], rtol=1e-4, atol=1e-4)


def test_run_is_reset_plus_steps(streaming):
    path, _ = streaming
    s = Session(path)
    xs = chunks(3, seed=1)
    s.step(xs[2])  # dirty state: run must start from zero anyway
    full = s.run({"chunk": np.concatenate(xs, axis=1)})["logits"]
    s.reset()
    steps = [s.step(x)["logits"] for x in xs]
    np.testing.assert_array_equal(full, np.concatenate(steps, axis=1))
    assert full.shape == (1, 12, 5)
    with pytest.raises(RuntimeModelError, match="multiple of the chunk"):
        s.run(np.zeros((1, 6, 16), np.float32))


def test_reset_and_explicit_state(streaming):
    path, _ = streaming
    s = Session(path)
    xs = chunks(4, seed=2)
    first = s.step(xs[0])["logits"]
    s.step(xs[1])
    saved = s.state()
    assert any(np.abs(v).max() > 0 for v in saved.values())
    after = s.step(xs[2])["logits"]
    s.set_state(saved)  # rewind one step
    np.testing.assert_array_equal(s.step(xs[2])["logits"], after)
    s.reset()
    assert all(np.abs(v).max() == 0 for v in s.state().values())
    np.testing.assert_array_equal(s.step(xs[0])["logits"], first)
    with pytest.raises(RuntimeModelError, match="unknown state 'nope'"):
        s.set_state({"nope": np.zeros(2, np.float32)})
    with pytest.raises(RuntimeModelError, match=r"must have shape \(1, 8\)"):
        s.set_state({"lstm.h": np.zeros((1, 9), np.float32)})


def test_threads_and_isas_agree_bit_for_bit(streaming):
    """Threads split output rows and every kernel variant equals the reference exactly, so
    the outputs may not change by a single bit."""
    from edgekit import kernels

    path, _ = streaming
    xs = chunks(3, seed=4)
    base = Session(path, isa="ref")
    want = [base.step(x)["logits"] for x in xs]
    for isa in kernels.available_isas():
        for threads in (1, 2, 3):
            s = Session(path, threads=threads, isa=isa)
            assert s.isa == isa and s.threads == threads
            for x, w in zip(xs, want):
                np.testing.assert_array_equal(s.step(x)["logits"], w, err_msg=f"{isa} x{threads}")


def test_isa_from_environment(streaming, monkeypatch):
    path, _ = streaming
    monkeypatch.setenv("EDGEKIT_ISA", "ref")
    assert Session(path).isa == "ref"
    monkeypatch.setenv("EDGEKIT_ISA", "sse9")
    with pytest.raises(RuntimeModelError, match="EDGEKIT_ISA: unknown ISA 'sse9'"):
        Session(path)


def test_profile(streaming):
    path, model = streaming
    s = Session(path)
    for x in chunks(3):
        s.step(x)
    prof = s.profile()
    ops = model.graphs["step"].ops
    assert [(p["op"], p["name"]) for p in prof] == [(o.type, o.name) for o in ops]
    assert all(p["calls"] == 3 and p["total_us"] > 0 for p in prof)
    assert all(p["mean_us"] == pytest.approx(p["total_us"] / 3) for p in prof)
    s.reset_profile()
    assert all(p["calls"] == 0 and p["total_us"] == 0 for p in s.profile())


@pytest.mark.parametrize("feed,match", [
    ({"chunk": np.zeros((1, 4, 15), np.float32)}, r"input 'chunk' must have shape \(1, 4, 16\), got \(1, 4, 15\)"),
    ({"chunk": np.zeros((1, 4, 16))}, "input 'chunk' must be f32, got float64"),
    ({"chunk": np.zeros((1, 4, 16), np.int64)}, "input 'chunk' must be f32, got i64"),
    ({"chunk": [[0.0] * 16] * 4}, "'chunk' must be a numpy array, got list"),
    ({"x": np.zeros((1, 4, 16), np.float32)}, r"unknown input 'x' \(graph 'step' has: chunk\)"),
    ({}, r"takes 1 input\(s\) \(chunk\), got 0"),
])
def test_bad_inputs_are_clear_errors(streaming, feed, match):
    path, _ = streaming
    s = Session(path)
    with pytest.raises(RuntimeModelError, match=match) as e:
        s.step(feed)
    assert isinstance(e.value, EdgekitError) and isinstance(e.value, ValueError)
    assert "\n" not in str(e.value)


def test_non_contiguous_input_is_accepted(streaming):
    path, _ = streaming
    x = chunks(1)[0]
    s = Session(path)
    want = s.step(x)["logits"]
    s.reset()
    wide = np.zeros((1, 4, 32), np.float32)
    wide[:, :, ::2] = x
    np.testing.assert_array_equal(s.step(wide[:, :, ::2])["logits"], want)


@pytest.mark.parametrize("kwargs,match", [
    (dict(graph="nope"), "the model has no graph 'nope'"),
    (dict(threads=0), "threads must be in 1..256"),
    (dict(threads="2"), "threads must be an int"),
    (dict(isa="sse9"), "unknown ISA 'sse9'"),
])
def test_bad_session_arguments(streaming, kwargs, match):
    path, _ = streaming
    with pytest.raises(RuntimeModelError, match=match):
        Session(path, **kwargs)


def test_bad_paths(tmp_path):
    with pytest.raises(RuntimeModelError, match="cannot open"):
        Session(tmp_path / "missing.ekm")
    with pytest.raises(RuntimeModelError, match="not a regular file"):
        Session(tmp_path)
    (tmp_path / "short.ekm").write_bytes(b"EKM1")
    with pytest.raises(RuntimeModelError, match="shorter than the 64-byte header"):
        Session(tmp_path / "short.ekm")


def test_two_graphs(two_graphs):
    path, model = two_graphs
    with pytest.raises(RuntimeModelError, match=r"2 graphs \(encoder, predictor\); choose one"):
        Session(path)
    pred = Session(path, graph="predictor")
    it = Interpreter(model, "predictor")
    tok = np.array([[7]], np.int64)
    np.testing.assert_allclose(pred.run({"tok": tok})["pred"], it.step({"tok": tok})["pred"], rtol=1e-6)
    # A data-dependent failure is an error of that call, not of the session.
    with pytest.raises(RuntimeModelError, match="pred.embed"):
        pred.run({"tok": np.array([[10]], np.int64)})
    assert pred.run({"tok": tok})["pred"].shape == (1, 1, 16)
    enc = Session(path, graph="encoder")
    x = np.random.default_rng(0).standard_normal((1, 3, 64)).astype(np.float32)
    np.testing.assert_allclose(enc.run(x)["enc"], Interpreter(model, "encoder").step({"x": x})["enc"],
                               rtol=1e-4, atol=1e-4)


def test_concurrent_calls_are_serialised(streaming):
    """run() releases the GIL; calls on one session from several threads must not interleave."""
    path, _ = streaming
    s = Session(path)
    x = chunks(1)[0]
    want = Session(path).run(x)["logits"]
    errors: list = []

    def worker():
        for _ in range(20):
            got = s.step(x)["logits"]  # state makes results differ; only the shape is fixed
            if got.shape != want.shape:
                errors.append(got.shape)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert s.profile()[0]["calls"] == 60


def test_gil_released_during_run(tmp_path):
    """A large graph keeps the C++ side busy; another Python thread must progress meanwhile."""
    D = 512
    rng = np.random.default_rng(0)
    t = {"x": ir.Tensor("x", "f32", (1, 64, D), "input"),
         "y": ir.Tensor("y", "f32", (1, 64, D), "output")}
    ops, prev = [], "x"
    for i in range(8):
        t[f"W{i}"] = ir.Tensor(f"W{i}", "f32", (D, D), "const", rng.standard_normal((D, D)).astype(np.float32) / 30)
        out = "y" if i == 7 else f"h{i}"
        if out != "y":
            t[out] = ir.Tensor(out, "f32", (1, 64, D), "activation")
        ops.append(ir.Op("linear", f"l{i}", [prev, f"W{i}", None], [out]))
        prev = out
    ekm.write(ir.Model(t, {"g": ir.Graph("g", ops, ["x"], ["y"])}, {}), tmp_path / "big.ekm")
    s = Session(tmp_path / "big.ekm")
    x = np.ones((1, 64, D), np.float32)
    ticks = [0]
    done = threading.Event()

    def counter():
        while not done.is_set():
            ticks[0] += 1

    th = threading.Thread(target=counter)
    th.start()
    try:
        for _ in range(3):
            s.run(x)
    finally:
        done.set()
        th.join()
    assert ticks[0] > 1000
    # profile()/state()/reset() waiting for that run must not hold the GIL either.
    ticks[0] = 0
    done.clear()
    runner = threading.Thread(target=lambda: [s.run(x) for _ in range(6)])
    th = threading.Thread(target=counter)
    runner.start()
    th.start()
    try:
        while runner.is_alive():
            s.profile(), s.state(), s.reset()
    finally:
        done.set()
        runner.join()
        th.join()
    assert ticks[0] > 1000


def test_ek_run_path():
    p = ek_run_path()
    assert p.name == "ek-run" and p.is_file()


# -- end to end: a zoo model through compress -> lower -> EKM -> Session ---------------------

@pytest.fixture(scope="module")
def tiny_conformer(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from edgekit import models
    from edgekit.compress import compress
    from edgekit.export.lower import lower, zoo_graphs
    from edgekit.export.pipeline import calibrate_activations

    torch.manual_seed(0)
    fp32 = models.build("conformer", "tiny")
    ex = models.info("conformer", "tiny")["example_input"]
    calib = [ex(batch=1, seconds=1.0, seed=1000 + i) for i in range(2)]
    q = compress(fp32, "int8", calib=calib)
    calibrate_activations(q, calib)
    specs = zoo_graphs("conformer", q)
    path = tmp_path_factory.mktemp("zoo") / "conformer-int8.ekm"
    ekm.write(lower(q, specs), path)
    return fp32, q, specs, path


def test_zoo_conformer_int8_matches_compressed_torch(tiny_conformer):
    """Issue 4 item 6: runtime vs the compressed PyTorch model, >= 40 dB at int8."""
    from edgekit.export import parity
    from edgekit.export.lower.models import example_feeds

    fp32, q, specs, path = tiny_conformer
    feeds = example_feeds("conformer", fp32, specs, 4, seed=0)
    for spec in specs:
        ref = parity.run_steps(parity.TorchRunner(q, spec), feeds[spec.name])
        got = parity.run_steps(parity.SessionRunner(str(path), spec.name), feeds[spec.name])
        assert parity.worst({spec.name: parity.compare(got, ref, None)}) >= 40


def test_zoo_conformer_run_equals_steps_and_threads(tiny_conformer):
    _, _, _, path = tiny_conformer
    s = Session(path)
    chunk = s.inputs[0]["shape"]
    x = np.random.default_rng(5).standard_normal((chunk[0], 3 * chunk[1], *chunk[2:])).astype(np.float32)
    full = s.run(x)
    s2 = Session(path, threads=2)
    steps = [s2.step(x[:, i * chunk[1]:(i + 1) * chunk[1]]) for i in range(3)]
    for k, v in full.items():
        np.testing.assert_array_equal(v, np.concatenate([p[k] for p in steps], axis=1))
    assert s.arena_bytes < s.naive_bytes / 4  # reuse matters on a real network


def test_huge_declared_tensors_are_refused_not_allocated(tmp_path):
    """Shapes are valid (2^30 elements each) but a session would need 8 GiB: a clear error."""
    shape = (1 << 15, 1 << 15)
    t = {"x": ir.Tensor("x", "f32", shape, "input"), "h": ir.Tensor("h", "f32", shape, "activation"),
         "y": ir.Tensor("y", "f32", shape, "output")}
    ops = [ir.Op("relu", "a", ["x"], ["h"]), ir.Op("relu", "b", ["h"], ["y"])]
    ekm.write(ir.Model(t, {"g": ir.Graph("g", ops, ["x"], ["y"])}, {}), tmp_path / "huge.ekm")
    with pytest.raises(RuntimeModelError, match="2 GiB limit"):
        Session(tmp_path / "huge.ekm")
