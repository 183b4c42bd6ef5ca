"""compress(): deep copy, exact fake-quant forward, packed_args vs kernels.pack, calibration,
sequential Wanda, report."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.compress import compress, print_report, quantize_module, report
from edgekit.compress.calibrate import fake_quant_np, int8_grid
from edgekit.compress.layers import QuantLayer, weight_from_2d
from edgekit.compress.prune import wanda_mask
from edgekit.compress.recipe import LayerSpec, RecipeError



class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Conv1d(16, 64, 3, padding=1)
        self.dw = nn.Conv1d(64, 64, 5, padding=4, dilation=2, groups=64)
        self.gr = nn.Conv1d(64, 64, 3, padding=1, groups=4, padding_mode="replicate")
        self.up = nn.ConvTranspose1d(64, 32, 4, stride=2, padding=1, groups=2)
        self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(128)
        self.out = nn.Linear(128, 20)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.gr(h + self.dw(h)))
        y, _ = self.lstm(self.up(h).transpose(1, 2))
        return self.out(self.norm(y))


def _net():
    torch.manual_seed(0)
    return Net().eval()


def _calib(n=2):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 16, 24, generator=g) for _ in range(n)]


RECIPES = {
    "int4-group": {"rules": [{"match": "*", "bits": 4, "granularity": "group", "group_size": 64}]},
    "lloyd-rows": {"rules": [{"match": "*", "bits": 3, "quantizer": "lloyd_max",
                              "codebook": "channel"}]},
    "magnitude": {"rules": [{"match": "*", "bits": 5, "quantizer": "mulaw",
                             "sparsity": {"kind": "magnitude", "amount": 0.5}}]},
    "nm-wanda": {"rules": [{"match": ["inp", "gr", "up", "lstm", "out"], "bits": 8,
                            "sparsity": {"kind": "nm", "n": 2, "m": 4, "score": "wanda"}},
                           {"match": "dw", "quantizer": "binary", "bits": 1}]},
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_fake_quant_forward_equals_float_forward_with_dequantized_weights(name):
    model, calib = _net(), _calib()
    before = copy.deepcopy(model.state_dict())
    small = compress(model, RECIPES[name], calib=calib)
    for k, v in model.state_dict().items():          # the original is untouched
        assert torch.equal(v, before[k])
    assert small is not model
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for lname, layer in small.named_modules():
            if isinstance(layer, QuantLayer):
                target = ref.get_submodule(lname)
                for pname, qm in layer.matrices.items():
                    p = getattr(target, pname)
                    p.copy_(weight_from_2d(target, qm.dequantize(), p.shape))
        x = calib[0]
        torch.testing.assert_close(small(x), ref(x), rtol=0, atol=0)


def _kernels():
    return pytest.importorskip("edgekit.kernels", reason="edgekit._C not built (make build)")


@pytest.mark.parametrize("name", list(RECIPES))
def test_packed_args_accepted_by_kernels_pack_with_matching_bytes(name):
    kernels = _kernels()
    small = compress(_net(), RECIPES[name], calib=_calib())
    checked = 0
    for _, layer in small.named_modules():
        if not isinstance(layer, QuantLayer):
            continue
        for pname, qm in layer.matrices.items():
            args = layer.packed_args(pname) if pname != "weight" else layer.packed_args()
            pw = kernels.pack(**args)
            assert pw.nbytes == qm.nbytes()
            codes, codebook, scale, mask = kernels.unpack(pw)
            stored = np.ones_like(args["codes"], bool) if mask is None else mask
            np.testing.assert_array_equal(np.where(stored, codes, 0),
                                          np.where(stored, args["codes"], 0))
            np.testing.assert_array_equal(codebook, args["codebook"])
            checked += 1
    assert checked == 13     # 4 conv + 8 LSTM gate matrices + 1 linear


def test_layer_exposes_pack_fields():
    small = compress(_net(), RECIPES["nm-wanda"], calib=_calib())
    out = small.out
    assert out.bits == 8 and out.nm == (2, 4) and out.group_size == 0
    assert np.asarray(out.codes).shape == (20, 128) and np.asarray(out.mask).mean() == 0.5
    assert small.lstm.packed_args("weight_hh_l1_reverse")["codes"].shape == (256, 64)
    with pytest.raises(ValueError, match="no quantized matrix"):
        small.lstm.packed_args("weight_xx")


def test_sequential_wanda_uses_outputs_of_already_compressed_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(50, 32) * torch.linspace(0.1, 3, 32)
    r = {"rules": [{"match": "*", "bits": 8, "sparsity": {"kind": "wanda", "amount": 0.5}}]}
    small = compress(model, r, calib=[x])
    np.testing.assert_array_equal(
        small[0].mask.numpy(),
        wanda_mask(model[0].weight.detach().numpy(), x.double().norm(dim=0).numpy(), 0.5))
    h = torch.relu(small[0](x)).double()            # the compressed first layer's output
    expect = wanda_mask(model[2].weight.detach().numpy(), h.norm(dim=0).numpy(), 0.5)
    np.testing.assert_array_equal(small[2].mask.numpy(), expect)
    h_float = torch.relu(model[0](x)).double().detach()
    assert not np.array_equal(expect, wanda_mask(model[2].weight.detach().numpy(),
                                                 h_float.norm(dim=0).numpy(), 0.5))


@pytest.mark.parametrize("method", ["minmax", "percentile", "mse"])
def test_activation_calibration(method):
    torch.manual_seed(0)
    lin = nn.Linear(16, 4).eval()
    x = torch.randn(400, 16)
    x[0, 0] = 40.0                                   # one outlier
    spec = LayerSpec(bits=8, activations={"method": method, "percentile": 99.0})
    from edgekit.compress.pipeline import _calibrate
    layer = quantize_module(copy.deepcopy(lin), spec,
                            _calibrate(lin, "lin", lin, spec, [x]))
    scale, zp = float(layer.act_scale), int(layer.act_zero_point)
    s0, z0 = int8_grid(float(x.min()), 40.0)
    if method == "minmax":
        assert zp == z0 and scale == pytest.approx(s0, rel=1e-6)
    if method == "percentile":
        assert scale < s0 / 2          # the outlier is clipped
    if method == "mse":
        v = x.double().numpy().ravel()
        err = np.mean((fake_quant_np(v, scale, zp) - v) ** 2)
        assert err <= np.mean((fake_quant_np(v, s0, z0) - v) ** 2)
    xq = torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)
    # calibrated layers accumulate exactly (layers.exact_linear): equal up to float GEMM rounding
    torch.testing.assert_close(layer(x), layer.base(xq), rtol=1e-5, atol=1e-5)
    assert not torch.equal(layer(x), layer.base(x))


def test_compress_errors_are_clear():
    model = _net()
    wanda = {"rules": [{"match": "*", "sparsity": {"kind": "wanda", "amount": 0.5}}]}
    with pytest.raises(RecipeError, match="needs calibration data"):
        compress(model, wanda)
    with pytest.raises(RecipeError, match=r"layer 'dw': N:M 2:4 needs K divisible by 4"):
        compress(model, {"rules": [{"match": "*", "sparsity": {"kind": "nm", "n": 2, "m": 4}}]})
    with pytest.raises(ValueError, match="nn.Module"):
        compress("model", "int8")
    with pytest.raises(ValueError, match="calib is empty"):
        compress(model, wanda, calib=[])


def test_report_is_json_and_consistent():
    model, calib = _net(), _calib()
    small = compress(model, "mixed", calib=calib)
    rep = report(small, model, calib)
    json.dumps(rep)
    rows = {r["name"]: r for r in rep["layers"]}
    assert set(rows) == {"inp", "dw", "gr", "up", "lstm", "out"}
    assert rows["inp"]["bits"] == 8 and rows["lstm"]["bits"] == 5 and rows["gr"]["bits"] == 6
    assert rows["lstm"]["levels"] <= 32
    assert sum(r["nbytes"] for r in rep["layers"]) == rep["model"]["packed_bytes"]
    for r in rep["layers"]:
        assert 5 < r["weight_snr_db"] < 60 and 5 < r["output_snr_db"] < 80
    assert rows["inp"]["weight_snr_db"] > rows["lstm"]["weight_snr_db"]   # 8 bit vs 5 bit
    assert 5 < rep["model"]["output_snr_db"] < 60
    assert rep["model"]["compression"] > 2
    print_report(rep)


def test_identical_model_reports_exact():
    model = nn.Sequential(nn.Linear(8, 8)).eval()
    with torch.no_grad():   # weights already on the 8-bit grid with power-of-two scales
        model[0].weight.copy_(torch.randint(-127, 128, (8, 8)).float() / 128)
        model[0].weight[:, 0] = 127 / 128
    small = compress(model, {"rules": [{"match": "*", "bits": 8}]})
    rep = report(small, model, [torch.randn(4, 8)])
    assert rep["layers"][0]["weight_snr_db"] is None and rep["model"]["output_snr_db"] is None


@pytest.mark.parametrize("name,recipe", [("conformer", "mixed"), ("rnnt", "wanda-2of4"),
                                         ("conmer", "gq-5bit")])
def test_zoo_models_compress_and_report(name, recipe):
    models = pytest.importorskip("edgekit.models")
    model = models.build(name, "tiny", seed=0)
    example = models.info(name, "tiny")["example_input"]
    calib = [example(batch=1, seconds=0.5, seed=s) for s in range(2)]
    small = compress(model, recipe, calib=calib)
    rep = report(small, model, calib)
    assert rep["layers"] and rep["model"]["compression"] > 2.5
    assert rep["model"]["output_snr_db"] > 3
    # the streaming path runs on the compressed copy too
    if name != "rnnt":
        st = small.init_state(1)
        out, _ = small.step(calib[0][0][:, :small.chunk_frames], st)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("make", [lambda: nn.Conv1d(6, 8, 3, groups=2),
                                  lambda: nn.ConvTranspose1d(6, 8, 3, groups=2),
                                  lambda: nn.Linear(5, 7), lambda: nn.Conv1d(4, 4, 5, groups=4)])
def test_weight_view_rows_are_output_channels(make):
    from edgekit.compress.layers import weight_2d
    torch.manual_seed(0)
    mod = make()
    w2d = weight_2d(mod, mod.weight)
    assert w2d.shape[0] == (mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels)
    torch.testing.assert_close(weight_from_2d(mod, w2d, mod.weight.shape), mod.weight.detach())
    # Zeroing row n of the view must silence exactly output channel n (bias only).
    w2d[3] = 0
    with torch.no_grad():
        mod.weight.copy_(weight_from_2d(mod, w2d, mod.weight.shape))
        x = torch.randn(2, 5) if isinstance(mod, nn.Linear) else torch.randn(2, mod.in_channels, 9)
        y = mod(x)
    ch = y[:, 3] if isinstance(mod, nn.Linear) else y[:, 3, :]
    torch.testing.assert_close(ch, torch.full_like(ch, float(mod.bias[3].detach())))
    others = y[:, [0, 1, 2]] if isinstance(mod, nn.Linear) else y[:, :3, :]
    assert (others - mod.bias[:3].reshape(1, 3, *([1] * (y.dim() - 2)))).abs().max() > 1e-3
