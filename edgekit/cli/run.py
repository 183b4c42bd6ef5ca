"""`edgekit run FILE`: run an .ekm model with the C++ runtime and save or summarise its outputs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import click
import numpy as np

from edgekit import EdgekitError
from edgekit._io import atomic_write_bytes


def _load_npy(path: str) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EdgekitError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:
        raise EdgekitError(f"{path}: not a readable .npy file ({exc})") from None
    if not isinstance(a, np.ndarray):
        raise EdgekitError(f"{path}: expected a .npy array, got an archive")
    return a


def _feeds(session, specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """--input values (`x.npy` for a one-input graph, else NAME=x.npy); zeros where absent."""
    names = [d["name"] for d in session.inputs]
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise EdgekitError(f"graph '{session.graph}' has inputs {', '.join(names)}: "
                                   "use --input NAME=file.npy")
            name, path = names[0], spec
        if name not in names:
            raise EdgekitError(f"graph '{session.graph}' has no input '{name}' (inputs: {', '.join(names)})")
        if name in feeds:
            raise EdgekitError(f"--input {name} given twice")
        feeds[name] = _load_npy(path)
    for d in session.inputs:
        if d["name"] not in feeds:
            feeds[d["name"]] = np.zeros(d["shape"], np.dtype(_NP[d["dtype"]]))
    return feeds


_NP = {"f32": "float32", "i32": "int32", "i8": "int8", "u8": "uint8", "i64": "int64"}


def _check_output(path: str) -> None:
    """Refuse an -o target that cannot become a file, before any time is spent running."""
    p = Path(path)
    if path.endswith(("/", "\\")) or p.is_dir():
        raise EdgekitError(f"-o {path}: is a directory; give a file path (.npy or .npz)")
    parent = p.parent
    if not parent.exists():
        # Creating directories the user did not ask for (e.g. /nonexist) hides typos.
        raise EdgekitError(f"-o {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise EdgekitError(f"-o {path}: {parent} is not a directory")


def _save(path: str, outputs: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    if path.endswith(".npz"):
        np.savez(buf, **outputs)
    elif len(outputs) == 1:
        np.save(buf, next(iter(outputs.values())))
    else:
        raise EdgekitError(f"the graph has {len(outputs)} outputs ({', '.join(outputs)}): "
                           "give -o a .npz path")
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise EdgekitError(f"-o {path}: cannot write ({exc.strerror or exc})") from None


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--input", "inputs", multiple=True, metavar="[NAME=]X.npy",
              help="Input array (.npy); NAME= for graphs with several inputs. Default: zeros.")
@click.option("-o", "--output", metavar="Y.npy|Y.npz", help="Write the output(s) here (atomically).")
@click.option("--graph", default=None, help="Graph to run (default: META's streaming graph, else the only one).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--isa", default=None, help="Kernel ISA (ref, avx2, avx512, neon, ...); default EDGEKIT_ISA or best.")
def run(file: str, inputs: tuple[str, ...], output: str | None, graph: str | None, threads: int,
        isa: str | None) -> None:
    """Run FILE (.ekm) once with the C++ runtime.

    A streaming graph given an input longer than one chunk runs chunk by chunk from a reset
    state and the outputs are concatenated (docs/runtime.md).
    """
    from edgekit.runtime import Session

    if not Path(file).is_file():
        raise EdgekitError(f"{file}: no such file")
    if output:
        _check_output(output)
    s = Session(file, graph=graph, threads=threads, isa=isa)
    feeds = _feeds(s, inputs)
    t0 = time.perf_counter()
    outs = s.run(feeds)
    ms = (time.perf_counter() - t0) * 1e3
    if output:
        _save(output, outs)
    click.echo(f"graph {s.graph}  isa {s.isa}  threads {s.threads}  arena {s.arena_bytes} B  "
               f"state {s.state_bytes} B  {ms:.2f} ms")
    for name, a in outs.items():
        click.echo(f"  {name}: {a.dtype} {tuple(a.shape)}  min {a.min():.4g}  max {a.max():.4g}")
    if output:
        click.echo(f"wrote {output}")
