"""Compression recipes: YAML that maps layers to bits, quantizer, scales, sparsity, calibration.

```yaml
name: mixed
description: free text
defaults:            # layer settings every rule starts from (built-in defaults below)
  quantizer: lloyd_max
rules:               # FIRST MATCHING RULE WINS; layers no rule matches stay float
  - match: "@first"  # glob(s) on module names, or @first / @last (quantizable layers, in order)
    bits: 8
  - type: lstm       # and/or a layer type: linear, conv1d, conv_transpose1d, lstm
    optional: true   # a rule that matches nothing is an error unless optional
    bits: 5
  - match: "*"
    bits: 4
```

Layer settings: bits (1..8), quantizer (uniform | lloyd_max | mulaw | binary), granularity
(tensor | channel | group), group_size (multiple of 64, with granularity group), codebook
(tensor | channel), range (full | narrow; uniform only), mu (μ-law), rounding (nearest |
gptq: data-aware codes, needs calibration data), skip (leave float),
sparsity ({kind: magnitude, amount, scope: row|tensor} | {kind: wanda, amount} |
{kind: nm, n, m, score: magnitude|wanda}), activations (null | minmax | percentile | mse, or
{method, percentile}). Every error is a `RecipeError` (a ValueError and an EdgekitError) with
one line naming the source, the rule and the key.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from edgekit import EdgekitError
from edgekit.compress.calibrate import ACT_METHODS
from edgekit.compress.layers import QUANTIZABLE, QuantLayer
from edgekit.compress.quantizers import CODEBOOK_SCOPES, GRANULARITIES, QUANTIZERS

# Built-in recipes: installed beside this module by CMake (wheels), else the checkout's recipes/.
_PACKAGED_DIR = Path(__file__).resolve().parent / "recipes"
BUILTIN_DIR = _PACKAGED_DIR if _PACKAGED_DIR.is_dir() else Path(__file__).resolve().parents[2] / "recipes"
LAYER_TYPES = {"linear": nn.Linear, "conv1d": nn.Conv1d,
               "conv_transpose1d": nn.ConvTranspose1d, "lstm": nn.LSTM}
_LAYER_KEYS = ("bits", "quantizer", "granularity", "group_size", "codebook", "range", "mu",
               "rounding", "sparsity", "activations", "skip")
_RULE_KEYS = ("match", "type", "optional") + _LAYER_KEYS
_TOP_KEYS = ("name", "description", "defaults", "rules")


class RecipeError(ValueError, EdgekitError):
    """A bad recipe: a ValueError for the API and an EdgekitError (exit 2) for the CLI."""


@dataclass(frozen=True)
class LayerSpec:
    """The resolved settings for one layer."""

    bits: int = 8
    quantizer: str = "uniform"
    granularity: str = "channel"
    group_size: int = 0
    codebook: str = "tensor"
    range: str = "full"
    mu: float = 255.0
    rounding: str = "nearest"
    sparsity: dict | None = None
    activations: dict | None = None
    skip: bool = False


@dataclass
class Rule:
    match: list[str]
    types: list[str]
    optional: bool
    settings: dict
    index: int


@dataclass
class Recipe:
    """A parsed, validated recipe; `resolve(model)` assigns a LayerSpec to each layer."""

    name: str
    description: str
    defaults: dict
    rules: list[Rule] = field(default_factory=list)
    source: str = "<recipe>"

    def spec_for(self, rule: Rule) -> LayerSpec:
        spec = replace(LayerSpec(), **{**self.defaults, **rule.settings})
        _check_combination(spec, f"{self.source}: rules[{rule.index}]")
        return spec

    def resolve(self, model: nn.Module) -> list[tuple[str, nn.Module, LayerSpec]]:
        """(name, module, spec) for every quantizable layer a rule selects, in module order.

        Errors: a rule that selects no layer (unless optional), a glob that only names
        modules that cannot be quantized.
        """
        layers = quantizable_layers(model)
        if not layers:
            raise RecipeError(f"{self.source}: the model has no quantizable layer "
                              f"({', '.join(LAYER_TYPES)})")
        chosen: dict[str, LayerSpec] = {}
        for rule in self.rules:
            hits = [n for n, m in layers if _selects(rule, n, m, layers)]
            where = f"{self.source}: rules[{rule.index}]"
            if not hits and not rule.optional:
                types_of = {n: type(m).__name__ for n, m in model.named_modules() if n}
                for pat in rule.match:
                    if pat.startswith("@"):
                        continue
                    other = [n for n in types_of if fnmatch.fnmatchcase(n, pat)]
                    if other and not any(fnmatch.fnmatchcase(n, pat) for n, _ in layers):
                        kinds = sorted({types_of[n] for n in other})
                        raise RecipeError(f"{where}.match: glob {pat!r} matches only "
                                          f"{', '.join(kinds)} modules, which cannot be quantized")
                sel = " and ".join(x for x in (f"match {rule.match}" if rule.match else "",
                                               f"type {rule.types}" if rule.types else "") if x)
                raise RecipeError(f"{where}: {sel} selects no quantizable layer "
                                  f"(set optional: true to allow that)")
            spec = self.spec_for(rule)
            for n in hits:
                chosen.setdefault(n, spec)
        return [(n, m, chosen[n]) for n, m in layers if n in chosen and not chosen[n].skip]


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear / Conv1d / ConvTranspose1d / LSTM modules, in module order.

    Skipped: layers inside an already quantized layer, and nn.MultiheadAttention's out_proj
    (torch reads its weight directly, and the packed in-projection is not modelled here).
    """
    out, blocked = [], []
    for name, m in model.named_modules():
        if any(name.startswith(b + ".") for b in blocked):
            continue
        if isinstance(m, (QuantLayer, nn.MultiheadAttention)):
            blocked.append(name)
            continue
        if isinstance(m, QUANTIZABLE) and name:
            out.append((name, m))
    return out


def _selects(rule: Rule, name: str, module: nn.Module, layers) -> bool:
    if rule.types and not isinstance(module, tuple(LAYER_TYPES[t] for t in rule.types)):
        return False
    if not rule.match:
        return True
    for pat in rule.match:
        if pat == "@first" and name == layers[0][0]:
            return True
        if pat == "@last" and name == layers[-1][0]:
            return True
        if not pat.startswith("@") and fnmatch.fnmatchcase(name, pat):
            return True
    return False


def load_recipe(src: Any) -> Recipe:
    """A Recipe from a built-in name ('int8', 'int4', 'mixed', ...), a YAML path or a dict."""
    if isinstance(src, Recipe):
        return src
    if isinstance(src, dict):
        return parse_recipe(src, "<dict>")
    if not isinstance(src, (str, Path)):
        raise RecipeError(f"recipe must be a name, a path or a dict, got {type(src).__name__}")
    path = Path(src)
    builtin = BUILTIN_DIR / f"{src}.yaml"
    if isinstance(src, str) and "/" not in src and not src.endswith((".yaml", ".yml")):
        if not builtin.is_file():
            raise RecipeError(f"unknown recipe {src!r}: not a built-in "
                              f"({', '.join(builtin_recipes())}) and not a .yaml path")
        path = builtin
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = str(exc).replace("\n", " ")
        raise RecipeError(f"{path}: not valid YAML: {line}") from None
    except RecursionError:
        raise RecipeError(f"{path}: YAML nested too deeply to be a recipe") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc.strerror}") from None
    return parse_recipe(data, str(path))


def builtin_recipes() -> list[str]:
    """Names of the recipes shipped in recipes/."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping (unknown keys and bad values are errors)."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with {', '.join(_TOP_KEYS)}")
    _unknown(data, _TOP_KEYS, source)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RecipeError(f"{source}: defaults: expected a mapping")
    _unknown(defaults, _LAYER_KEYS, f"{source}: defaults")
    defaults = _settings(defaults, f"{source}: defaults")
    rules_in = data.get("rules")
    if not isinstance(rules_in, list) or not rules_in:
        raise RecipeError(f"{source}: rules: expected a non-empty list of rules")
    rules = []
    for i, r in enumerate(rules_in):
        where = f"{source}: rules[{i}]"
        if not isinstance(r, dict):
            raise RecipeError(f"{where}: expected a mapping")
        _unknown(r, _RULE_KEYS, where)
        match = _str_list(r.get("match"), f"{where}.match")
        for pat in match:
            if pat.startswith("@") and pat not in ("@first", "@last"):
                raise RecipeError(f"{where}.match: unknown selector {pat!r} (@first, @last)")
        types = _str_list(r.get("type"), f"{where}.type")
        for t in types:
            if t not in LAYER_TYPES:
                raise RecipeError(f"{where}.type: {t!r} cannot be quantized; expected one of "
                                  f"{', '.join(LAYER_TYPES)}")
        if not match and not types:
            raise RecipeError(f"{where}: needs 'match' (glob) or 'type'")
        optional = r.get("optional", False)
        if not isinstance(optional, bool):
            raise RecipeError(f"{where}.optional: expected true or false, got {optional!r}")
        settings = _settings({k: v for k, v in r.items() if k in _LAYER_KEYS}, where)
        rule = Rule(match, types, optional, settings, i)
        rules.append(rule)
    recipe = Recipe(str(data.get("name", Path(source).stem)), str(data.get("description", "")),
                    defaults, rules, source)
    for rule in rules:
        recipe.spec_for(rule)
    return recipe


def _unknown(d: dict, allowed, where: str) -> None:
    for k in d:
        if k not in allowed:
            raise RecipeError(f"{where}: unknown key {k!r} (allowed: {', '.join(allowed)})")


def _str_list(v, where: str) -> list[str]:
    if v is None:
        return []
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise RecipeError(f"{where}: expected a string or a list of strings, got {v!r}")
    return list(items)


def _choice(v, options, where):
    if v not in options:
        raise RecipeError(f"{where}: {v!r} is not one of {', '.join(map(str, options))}")
    return v


def _int(v, where, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RecipeError(f"{where}: expected an integer in {lo}..{hi}, got {v!r}")
    return v


def _settings(d: dict, where: str) -> dict:
    out = {}
    for k, v in d.items():
        w = f"{where}.{k}"
        if k == "bits":
            out[k] = _int(v, w, 1, 8)
        elif k == "quantizer":
            out[k] = _choice(v, QUANTIZERS, w)
        elif k == "granularity":
            out[k] = _choice(v, GRANULARITIES, w)
        elif k == "group_size":
            _int(v, w, 0, 1 << 20)
            if v % 64:
                raise RecipeError(f"{w}: must be a multiple of 64, got {v}")
            out[k] = v
        elif k == "codebook":
            out[k] = _choice(v, CODEBOOK_SCOPES, w)
        elif k == "range":
            out[k] = _choice(v, ("full", "narrow"), w)
        elif k == "rounding":
            out[k] = _choice(v, ("nearest", "gptq"), w)
        elif k == "mu":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise RecipeError(f"{w}: expected a number > 0, got {v!r}")
            out[k] = float(v)
        elif k == "skip":
            if not isinstance(v, bool):
                raise RecipeError(f"{w}: expected true or false, got {v!r}")
            out[k] = v
        elif k == "sparsity":
            out[k] = _sparsity(v, w)
        elif k == "activations":
            out[k] = _activations(v, w)
    return out


def _sparsity(v, where: str) -> dict | None:
    if v is None or v is False:
        return None
    if not isinstance(v, dict) or "kind" not in v:
        raise RecipeError(f"{where}: expected a mapping with kind: magnitude | wanda | nm")
    kind = _choice(v["kind"], ("magnitude", "wanda", "nm"), f"{where}.kind")
    allowed = {"magnitude": ("kind", "amount", "scope"), "wanda": ("kind", "amount"),
               "nm": ("kind", "n", "m", "score")}[kind]
    _unknown(v, allowed, where)
    if kind == "nm":
        for k in ("n", "m"):
            if k not in v:
                raise RecipeError(f"{where}: nm needs '{k}'")
        n, m = _int(v["n"], f"{where}.n", 1, 63), _int(v["m"], f"{where}.m", 2, 64)
        if n >= m or 64 % m:
            raise RecipeError(f"{where}: n:m must have n < m and m dividing 64, got {n}:{m}")
        return {"kind": "nm", "n": n, "m": m,
                "score": _choice(v.get("score", "magnitude"), ("magnitude", "wanda"),
                                 f"{where}.score")}
    amount = v.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise RecipeError(f"{where}.amount: expected a fraction in [0, 1), got {amount!r}")
    out = {"kind": kind, "amount": float(amount)}
    if kind == "magnitude":
        out["scope"] = _choice(v.get("scope", "row"), ("row", "tensor"), f"{where}.scope")
    return out


def _activations(v, where: str) -> dict | None:
    if v is None or v is False:
        return None
    if isinstance(v, str):
        v = {"method": v}
    if not isinstance(v, dict):
        raise RecipeError(f"{where}: expected a method name or {{method, percentile}}")
    _unknown(v, ("method", "percentile"), where)
    method = _choice(v.get("method", "minmax"), ACT_METHODS, f"{where}.method")
    pct = v.get("percentile", 99.99)
    if isinstance(pct, bool) or not isinstance(pct, (int, float)) or not 50 < pct <= 100:
        raise RecipeError(f"{where}.percentile: expected a number in (50, 100], got {pct!r}")
    return {"method": method, "percentile": float(pct)}


def _check_combination(spec: LayerSpec, where: str) -> None:
    if spec.quantizer == "binary" and spec.bits != 1:
        raise RecipeError(f"{where}: quantizer binary needs bits: 1, got bits: {spec.bits}")
    if spec.quantizer == "uniform" and spec.bits < 2:
        raise RecipeError(f"{where}: uniform needs bits >= 2; use quantizer: binary for 1 bit")
    if spec.granularity == "group" and spec.group_size == 0:
        raise RecipeError(f"{where}: granularity group needs group_size (a multiple of 64)")
    if spec.granularity != "group" and spec.group_size:
        raise RecipeError(f"{where}: group_size {spec.group_size} needs granularity: group "
                          f"(got {spec.granularity})")
