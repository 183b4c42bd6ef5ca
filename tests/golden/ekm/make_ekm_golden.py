"""Regenerate the golden EKM files: `.venv/bin/python tests/golden/ekm/make_ekm_golden.py`.

Deterministic (fixed seeds, no timestamps): a changed file means the writer or the format
changed. `test_ekm_format.py::test_golden_files_are_current` fails until they are rewritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "python"))

import ekm_models  # noqa: E402

from edgekit.export import ekm  # noqa: E402


def models() -> dict:
    """name -> ir.Model of every golden file."""
    return {"streaming": ekm_models.streaming_model(), "two_graphs": ekm_models.two_graph_model()}


def main() -> None:
    for name, model in models().items():
        n = ekm.write(model, HERE / f"{name}.ekm")
        print(f"{name}.ekm: {n} bytes")


if __name__ == "__main__":
    main()
