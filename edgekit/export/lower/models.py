"""Which graphs each model exports, with example arguments and public tensor names.

* Conformer / Conmer / NWC / NWC-CMRL: one graph `step(chunk, state)`.
* RNN-T: `encoder` (its streaming step), `predictor` (one token + predictor state) and
  `joiner` (one encoder frame + one predictor output -> logits); the decoder loop that strings
  them together stays in the host program, as in every RNN-T deployment.
* A user module: one graph `forward(x)` of the given input shape, no state.

Batch is 1 and every shape is static (docs/format.md §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgekit.models import nwc


@dataclass
class GraphSpec:
    """One graph: `method(*args)` of the model; names for its positional tensor inputs and
    outputs; `state_arg` / `state_out`: the positions of the state dict in args / outputs
    (its keys become state tensors named `state_prefix + key`)."""

    name: str
    method: str
    args: tuple
    input_names: list[str]
    output_names: list[str]
    state_arg: int | None = None
    state_out: int | None = None
    state_prefix: str = ""
    streaming: dict | None = field(default=None)


def zoo_graphs(name: str, model: nn.Module) -> list[GraphSpec]:
    """The graphs of zoo model `name` (see the module docstring)."""
    if name == "rnnt":
        cfg = model.cfg
        pst = model.init_pred_state(1)
        return [
            GraphSpec("encoder", "step",
                      (torch.zeros(1, cfg.chunk_frames, 80), model.init_state(1)),
                      ["chunk", None], ["enc", None], 1, 1,
                      streaming={"graph": "encoder", "input": "chunk", "time_axis": 1,
                                 "chunk": cfg.chunk_frames, "output_time_axis": 1}),
            GraphSpec("predictor", "predict", (torch.zeros(1, 1, dtype=torch.long), pst),
                      ["token", None], ["pred", None], 1, 1, state_prefix="pred."),
            GraphSpec("joiner", "join", (torch.zeros(1, cfg.enc_dim), torch.zeros(1, cfg.pred_dim)),
                      ["joiner.enc", "joiner.pred"], ["logits"]),
        ]
    if name.startswith("nwc"):
        return [GraphSpec("step", "step", (torch.zeros(1, nwc.HOP), model.init_state(1)),
                          ["chunk", None], ["wave", None], 1, 1,
                          streaming={"graph": "step", "input": "chunk", "time_axis": 1,
                                     "chunk": nwc.HOP, "output_time_axis": 1})]
    if name in ("conformer", "conmer"):
        cf = model.cfg.chunk_frames
        return [GraphSpec("step", "step", (torch.zeros(1, cf, 80), model.init_state(1)),
                          ["chunk", None], ["logits", None], 1, 1,
                          streaming={"graph": "step", "input": "chunk", "time_axis": 1,
                                     "chunk": cf, "output_time_axis": 1})]
    raise ValueError(f"no export graphs known for model {name!r}")


def module_graphs(model: nn.Module, input_shape: tuple[int, ...]) -> list[GraphSpec]:
    """One stateless `forward` graph of a user module on a float32 input of `input_shape`."""
    x = torch.zeros(tuple(input_shape))
    with torch.no_grad():
        y = model(x)
    n = len(y) if isinstance(y, (tuple, list)) else 1
    outs = ["y"] if n == 1 else [f"y{i}" for i in range(n)]
    return [GraphSpec("forward", "forward", (x,), ["x"], outs)]


def example_feeds(name: str | None, model: nn.Module, specs: list[GraphSpec], steps: int,
                  seed: int = 0) -> dict[str, list[dict]]:
    """Per graph, `steps` consecutive feeds {input name: np.ndarray} built from the zoo's
    example inputs (`seed`); for RNN-T the joiner gets real encoder and predictor outputs.
    A user module (name None) gets N(0, 1) inputs."""
    from edgekit import models
    feeds: dict[str, list[dict]] = {}
    if name is None:
        g = torch.Generator().manual_seed(seed)
        spec = specs[0]
        return {spec.name: [{"x": torch.randn(spec.args[0].shape, generator=g).numpy()}
                            for _ in range(steps)]}
    ex = models.info(name, "tiny")["example_input"]   # the input generator ignores the size
    first = specs[0]
    chunk = first.args[0].shape[1]
    rate = nwc.SAMPLE_RATE if name.startswith("nwc") else 100
    args = ex(batch=1, seconds=(steps * chunk + 1) / rate, seed=seed)
    x = args[0]
    feeds[first.name] = [{"chunk": x[:, i * chunk:(i + 1) * chunk].contiguous().numpy()}
                         for i in range(steps)]
    if name == "rnnt":
        tokens = args[1]
        while tokens.shape[1] < steps:
            tokens = torch.cat([tokens, tokens], 1)
        feeds["predictor"] = [{"token": tokens[:, i:i + 1].contiguous().numpy()}
                              for i in range(steps)]
        with torch.no_grad():
            enc = model.encode(x)[0]
            pred, _ = model.predict(tokens[:, :steps], model.init_pred_state(1))
        feeds["joiner"] = [{"joiner.enc": enc[i % enc.shape[0]][None].numpy(),
                            "joiner.pred": pred[0, i][None].numpy()} for i in range(steps)]
    return feeds
