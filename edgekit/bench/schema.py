"""The one JSON schema every bench result follows (result.schema.json, docs/bench.md)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("result.schema.json")
SCHEMA_ID = "edgekit-bench/1"


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate(result: Any, source: str = "result") -> dict:
    """Raise ValueError (naming `source` and the first bad field) unless `result` follows the
    schema. Returns `result`."""
    errors = sorted(_validator().iter_errors(result), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ValueError(f"{source}: not an edgekit bench result: {where}: {e.message}")
    return result


def load(path: str | Path) -> dict:
    """Read and validate one result file; ValueError with a one-line reason otherwise."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {p}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not JSON ({exc})") from None
    return validate(data, str(p))
