"""Synthetic speech corpus from espeak-ng: nothing is downloaded, everything is reproducible.

    corpus = plan(hours=1.0, seed=0)           # list of Utterance: text, speaker, split, seed
    synthesize(corpus, out_dir, progress=cb)   # writes wav/<split>/<id>.wav + <split>.jsonl

A *speaker* is an espeak-ng voice plus a variant (e.g. `en-us+f3`); rate and pitch vary per
utterance around the speaker's own. The train/dev/test split is a hash of the speaker, so the
test split holds voices the model never heard. Every utterance has its own seed, so an
utterance's audio depends only on (corpus seed, index) and an interrupted run resumes by
skipping finished files.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit._io import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgekit.data import vocab

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050
SPLITS = ("train", "dev", "test")
FORMAT_VERSION = 1

BASE_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
               "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3")

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "play",
            "pause", "next", "back", "open", "close", "louder", "quieter", "cancel", "help")
OBJECTS = ("the lights", "the music", "the door", "the radio", "the heating", "the fan",
           "the window", "the alarm", "the camera", "the oven")
VERBS = ("turn on", "turn off", "open", "close", "check", "lock", "unlock", "start", "stop")
SENTENCES = (
    "set a timer for {d} minutes", "call {name}", "what time is it", "how is the weather",
    "play the next song", "send a message to {name}", "volume {d}", "go to room {d} {d}",
    "remind me at {d} o'clock", "move forward {d} steps", "it's going to rain today",
    "the battery is low", "read my messages", "where is {name}", "add milk to the list",
)
NAMES = ("anna", "bob", "carol", "david", "emma", "frank", "grace", "henry", "mom", "dad")


@dataclass(frozen=True)
class Utterance:
    """One planned utterance; `seed` fixes its rate, pitch, noise and reverberation."""

    id: str
    text: str
    speaker: str
    split: str
    seed: int


def speakers() -> list[str]:
    """Every espeak-ng speaker (voice+variant) the corpus draws from."""
    return [f"{v}+{w}" for v in BASE_VOICES for w in VARIANTS]


def split_of(speaker: str) -> str:
    """Split of a speaker: a stable hash, 80/10/10, so a voice never crosses splits."""
    h = int(hashlib.sha256(speaker.encode()).hexdigest()[:8], 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def _text(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.4:
        return " ".join(rng.choice(DIGITS, size=int(rng.integers(1, 6))))
    if kind < 0.7:
        if rng.random() < 0.5:
            return str(rng.choice(COMMANDS))
        return f"{rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    template = str(rng.choice(SENTENCES))
    while "{d}" in template:
        template = template.replace("{d}", str(rng.choice(DIGITS)), 1)
    return template.replace("{name}", str(rng.choice(NAMES)))


def plan(hours: float = 1.0, seed: int = 0) -> list[Utterance]:
    """The corpus as a deterministic list of utterances (~1.5 s each on average)."""
    if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not 0 < hours <= 100:
        raise ValueError(f"hours must be a number in (0, 100], got {hours!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in 0..2**32-1, got {seed!r}")
    n = max(3, int(round(hours * 3600 / 1.5)))
    rng = np.random.default_rng([seed, 0])
    spk = speakers()
    out = []
    for i in range(n):
        speaker = spk[int(rng.integers(len(spk)))]
        out.append(Utterance(f"u{i:06d}", vocab.normalize(_text(rng)), speaker,
                             split_of(speaker), int(rng.integers(2**31))))
    return out


def plan_small(per_split: int = 2, seed: int = 0) -> list[Utterance]:
    """A tiny corpus with exactly `per_split` utterances in each split (smoke runs, tests)."""
    if not isinstance(per_split, int) or per_split < 1:
        raise ValueError(f"per_split must be a positive int, got {per_split!r}")
    rng = np.random.default_rng([seed, 1])
    by_split = {s: [v for v in speakers() if split_of(v) == s] for s in SPLITS}
    out = []
    for split in SPLITS:
        for _ in range(per_split):
            speaker = by_split[split][int(rng.integers(len(by_split[split])))]
            out.append(Utterance(f"u{len(out):06d}", vocab.normalize(_text(rng)), speaker,
                                 split, int(rng.integers(2**31))))
    return out


def espeak_path() -> str:
    """Path of the espeak-ng binary; a clear error if it is not installed."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise FileNotFoundError(
            "espeak-ng not found on PATH; install it (Debian/Ubuntu: apt-get install espeak-ng)")
    return path


def _espeak(text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [espeak_path(), "-v", voice, "-s", str(rate), "-p", str(pitch), "-w", str(wav),
               text]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except subprocess.CalledProcessError as exc:
            err = " ".join(exc.stderr.decode("utf-8", "replace").split()) or "no message"
            raise ValueError(f"espeak-ng failed (exit {exc.returncode}) for voice {voice!r}: "
                             f"{err}") from None
        except subprocess.TimeoutExpired:
            raise ValueError(f"espeak-ng did not finish in 60 s for voice {voice!r}") from None
        return read_wav(wav, expect_rate=ESPEAK_RATE)


def _room(rng: np.random.Generator) -> np.ndarray:
    """A simple impulse response: direct path plus exponentially decaying noise (RT60 0.1-0.5 s)."""
    rt60 = rng.uniform(0.1, 0.5)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60) * rng.uniform(0.05, 0.3)
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~2 ms
    tail[0] = 1.0
    return tail


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    colour = rng.integers(3)
    if colour == 1:  # brown-ish: low-frequency rumble
        white = np.cumsum(white)
        white -= np.convolve(white, np.ones(256) / 256, mode="same")
    elif colour == 2:  # hum at mains frequency with harmonics
        t = np.arange(n) / SAMPLE_RATE
        white = 0.3 * white + sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3))
    return white / (np.std(white) + 1e-9)


def render(utt: Utterance) -> np.ndarray:
    """Audio of one utterance, float32 16 kHz in [-1, 1]; depends only on `utt`."""
    from scipy.signal import fftconvolve, resample_poly

    rng = np.random.default_rng(utt.seed)
    rate = int(rng.integers(120, 200))
    pitch = int(rng.integers(25, 75))
    x = _espeak(utt.text, utt.speaker, rate, pitch).astype(np.float64)
    x = resample_poly(x, SAMPLE_RATE, ESPEAK_RATE)  # 160/441 after reduction, anti-aliased
    pad = np.zeros(int(rng.uniform(0.05, 0.25) * SAMPLE_RATE))
    x = np.concatenate([pad, x, pad[: len(pad) // 2]])
    if rng.random() < 0.5:
        x = fftconvolve(x, _room(rng))[: len(x)]
    snr_db = rng.uniform(5, 35)
    power = np.mean(x**2) + 1e-12
    x = x + _noise(rng, len(x)) * np.sqrt(power / 10 ** (snr_db / 10))
    x *= rng.uniform(0.3, 0.9) / (np.max(np.abs(x)) + 1e-9)
    return x.astype(np.float32)


def wav_bytes(x: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV bytes of float samples in [-1, 1]."""
    pcm = np.clip(np.round(np.asarray(x) * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def read_wav(path: str | Path, expect_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Float32 samples of a 16-bit mono WAV; ValueError for any other format or rate."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ValueError(f"{path}: expected 16-bit mono WAV")
            if w.getframerate() != expect_rate:
                raise ValueError(f"{path}: sample rate {w.getframerate()}, expected {expect_rate}")
            data = w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def _valid(path: Path) -> bool:
    try:
        return len(read_wav(path)) > 0
    except (OSError, ValueError):
        return False


def synthesize(
    corpus: list[Utterance],
    out_dir: str | Path,
    meta: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write every utterance's WAV (skipping valid existing ones) and the split manifests.

    Manifests are `<split>.jsonl`, one {"id", "audio", "text", "speaker", "seconds"} per line,
    written only after all audio exists. `meta` (e.g. seed and hours) goes to `corpus.json`;
    resuming into a directory made with different settings is a ValueError.
    Returns the number of utterances per split.
    """
    espeak_path()
    out = Path(out_dir)
    meta = {"format": FORMAT_VERSION, "sample_rate": SAMPLE_RATE, **(meta or {})}
    info = out / "corpus.json"
    if info.exists():
        try:
            old = json.loads(info.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"{info} is unreadable or not JSON ({exc}); remove it or use a "
                             "new dir") from None
        if old != meta:
            raise ValueError(f"{out} holds a corpus made with {old}, not {meta}; use a new dir")
    else:
        atomic_write_json(info, meta)
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, utt in enumerate(corpus):
        rel = Path("wav") / utt.split / f"{utt.id}.wav"
        path = out / rel
        if not _valid(path):
            atomic_write_bytes(path, wav_bytes(render(utt)))
        seconds = (path.stat().st_size - 44) / 2 / SAMPLE_RATE
        row = {"id": utt.id, "audio": str(rel), "text": utt.text, "speaker": utt.speaker,
               "seconds": round(seconds, 3)}
        lines[utt.split].append(json.dumps(row))
        if progress:
            progress(i + 1, len(corpus))
    for split, rows in lines.items():
        atomic_write_text(out / f"{split}.jsonl", "".join(r + "\n" for r in rows))
    return {s: len(r) for s, r in lines.items()}

