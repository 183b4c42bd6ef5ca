"""Recipes: built-ins load, first matching rule wins, every error is one clear line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekit import EdgekitError
from edgekit.compress import builtin_recipes, load_recipe, parse_recipe
from edgekit.compress.recipe import RecipeError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.front = nn.Conv1d(4, 8, 3)
        self.norm = nn.LayerNorm(8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.front(x).transpose(1, 2)
        h, _ = self.rnn(self.norm(h))
        return self.head(torch.relu(self.mid(h)))


def _names(recipe, model=None):
    return {n: s for n, _, s in load_recipe(recipe).resolve(model or Net())}


def test_builtins_load_and_resolve():
    assert {"int8", "int4", "mixed", "gq-5bit"} <= set(builtin_recipes())
    for name in builtin_recipes():
        r = load_recipe(name)
        assert r.rules and r.name == name
    assert {s.bits for s in _names("int8").values()} == {8}
    mixed = _names("mixed")
    assert mixed["front"].bits == 8 and mixed["head"].bits == 8      # @first / @last
    assert mixed["rnn"].bits == 5 and mixed["mid"].bits == 4


def test_first_matching_rule_wins_and_unmatched_layers_stay_float():
    r = {"rules": [{"match": "mid", "bits": 3, "quantizer": "lloyd_max"},
                   {"match": ["mid", "head"], "bits": 6},
                   {"type": "lstm", "bits": 5, "skip": True}]}
    got = _names(r)
    assert got["mid"].bits == 3 and got["mid"].quantizer == "lloyd_max"
    assert got["head"].bits == 6
    assert "front" not in got and "rnn" not in got    # no rule / skip: left float


def test_defaults_apply_to_rules():
    r = {"defaults": {"quantizer": "mulaw", "bits": 5}, "rules": [{"match": "*"}]}
    assert {(s.quantizer, s.bits) for s in _names(r).values()} == {("mulaw", 5)}


def test_recipe_from_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("rules:\n  - match: '*'\n    bits: 6\n")
    assert load_recipe(str(p)).rules[0].settings["bits"] == 6


BAD = [
    ({"rules": [{"match": "*", "bitz": 4}]}, r"rules\[0\]: unknown key 'bitz'"),
    ({"rules": [{"match": "*", "bits": 9}]}, r"rules\[0\]\.bits: expected an integer in 1\.\.8"),
    ({"rules": [{"match": "*", "quantizer": "kmeans"}]}, r"rules\[0\]\.quantizer: 'kmeans'"),
    ({"rules": [{"match": "*", "group_size": 48, "granularity": "group"}]}, "multiple of 64"),
    ({"rules": [{"match": "*", "granularity": "group"}]}, "needs group_size"),
    ({"rules": [{"match": "*", "quantizer": "binary", "bits": 4}]}, "binary needs bits: 1"),
    ({"rules": [{"match": "*", "sparsity": {"kind": "nm", "n": 2, "m": 3}}]}, "m dividing 64"),
    ({"rules": [{"match": "*", "sparsity": {"kind": "wanda", "amount": 1.5}}]}, r"amount"),
    ({"rules": [{"match": "*", "activations": "max"}]}, r"activations\.method"),
    ({"rules": [{"type": "gru"}]}, r"rules\[0\]\.type: 'gru' cannot be quantized"),
    ({"rules": [{"bits": 4}]}, "needs 'match'"),
    ({"rules": []}, "non-empty list"),
    ({"rulez": []}, "unknown key 'rulez'"),
    ({"rules": [{"match": "@middle"}]}, "unknown selector"),
]


@pytest.mark.parametrize("data,msg", BAD)
def test_bad_values_are_clear_one_line_errors(data, msg):
    with pytest.raises(RecipeError, match=msg) as exc:
        parse_recipe(data, "my.yaml")
    text = str(exc.value)
    assert "\n" not in text and text.startswith("my.yaml")
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, EdgekitError)


def test_glob_matching_no_layer_is_an_error_unless_optional():
    with pytest.raises(RecipeError, match=r"rules\[0\]: match \['encoder\.\*'\] selects no"):
        _names({"rules": [{"match": "encoder.*", "bits": 4}]})
    assert _names({"rules": [{"match": "encoder.*", "optional": True}, {"match": "*"}]})


def test_glob_naming_only_unquantizable_layers_is_an_error():
    with pytest.raises(RecipeError, match="matches only LayerNorm modules, which cannot be"):
        _names({"rules": [{"match": "norm", "bits": 4}]})


def test_unknown_builtin_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'int3': not a built-in"):
        load_recipe("int3")
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(RecipeError, match="not valid YAML") as exc:
        load_recipe(str(bad))
    assert "\n" not in str(exc.value)
    with pytest.raises(RecipeError, match="must be a name"):
        load_recipe(42)


def test_deeply_nested_yaml_is_a_recipe_error(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(RecipeError, match="nested too deeply"):
        load_recipe(str(p))
