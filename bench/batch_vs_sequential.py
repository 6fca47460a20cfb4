"""Batched vs sequential transcription on CPU, through the daemon's own `transcriber.transcribe`.

Renders a long English text with espeak-ng (16 kHz mono FLAC, reproducible with `sox -R`), then
runs each (model, batch_size) in a fresh process: wall time, × realtime, peak RSS and WER against
the rendered text. Usage: `uv run python bench/batch_vs_sequential.py [--minutes 4] [--models base]`.
Prints a Markdown table (the figures in docs/models.md come from it).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script
from bench.clips import SHARED as SHARED_AUDIO  # after the path is set

SENTENCES = [
    "The committee met on Tuesday morning to review the budget for the coming year.",
    "Several members asked why the costs of maintenance had risen so sharply since spring.",
    "The treasurer explained that two of the pumps had failed and had to be replaced.",
    "After a long discussion they agreed to postpone the new library until autumn.",
    "Children from the local school presented a short play about the history of the river.",
    "Rain is expected over the weekend, so the market will move into the town hall.",
    "Please remember to return borrowed tools to the shed behind the community garden.",
    "The bakery on the corner will close early on Friday for a family celebration.",
    "Volunteers are still needed to paint the fence along the northern footpath.",
    "A new bus timetable starts next month, with an extra service on Sunday evenings.",
    "The old bridge will be inspected by engineers before any heavy vehicles may cross it.",
    "Everyone is welcome at the concert, which raises money for the village hospital.",
]


def render(minutes: float, out: Path) -> str:
    """Speech of about `minutes` minutes at `out` (FLAC, 16 kHz mono); returns its text."""
    words_per_min = 150
    text: list[str] = []
    i = 0
    while sum(len(s.split()) for s in text) < minutes * words_per_min:
        text.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    joined = " ".join(text)
    wav = out.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), joined], check=True)
    subprocess.run(["sox", str(wav), "-R", "-r", "16000", "-c", "1", str(out)], check=True)
    wav.unlink()
    return joined


#: Real recordings in ../shared/audio whose words are known (shared/audio/README.md).
REAL = {
    "jfk.flac": "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "living_room_light_en.wav": "Turn on the living room light.",
    "turn_on_the_living_room_lamp.wav": "turn on the living room lamp",
    "speaches_audio.wav": "Hello, world.",
    "stereo_diarization.wav": "He could rise if he seemed to complain against the wizard who would vanish "
    "behind the curtain on the left.",
}


def render_real(passes: int, out: Path) -> str:
    """Real speech of several minutes at `out` (FLAC, 16 kHz mono): the recordings with known words,
    `passes` times in rotating order at tempo 0.9/1.0/1.1 with a second of silence between them
    (so no 30 s window holds the same audio twice); returns the reference text."""
    names = list(REAL)
    parts: list[str] = []
    ref: list[str] = []
    tmp = out.parent
    for p in range(passes):
        order = names[p % len(names) :] + names[: p % len(names)]
        tempo = (0.9, 1.0, 1.1)[p % 3]
        for i, name in enumerate(order):
            piece = tmp / f"p{p}_{i}.wav"
            subprocess.run(
                [
                    "sox",
                    str(SHARED_AUDIO / name),
                    "-R",
                    "-r",
                    "16000",
                    "-c",
                    "1",
                    str(piece),
                    "tempo",
                    str(tempo),
                    "pad",
                    "0",
                    "1",
                ],
                check=True,
            )
            parts.append(str(piece))
            ref.append(REAL[name])
    subprocess.run(["sox", *parts, str(out)], check=True)
    for part in parts:
        Path(part).unlink()
    return " ".join(ref)


def _norm(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def wer(ref: str, hyp: str) -> float:
    """Word error rate (Levenshtein over words)."""
    r, h = _norm(ref), _norm(hyp)
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / max(1, len(r))


def one_run(model_dir: str, audio: str, mode: str, threads: int) -> None:
    """Child process: load, transcribe, print a JSON line of figures."""
    from asr_daemon import jobs
    from asr_daemon.engine import audio as audiomod
    from asr_daemon.engine import replicas, transcriber

    model = replicas.load_model(Path(model_dir), "cpu", "int8", threads, 1)
    texts: list[str] = []
    first: list[float] = []
    t0 = time.perf_counter()

    def on_segment(seg: transcriber.Segment) -> None:
        if not first:
            first.append(time.perf_counter() - t0)
        texts.append(seg.text)

    if mode.startswith("lib"):  # the library's own batched pipeline on the whole file, the same options
        from faster_whisper import BatchedInferencePipeline, decode_audio

        samples = decode_audio(audio)
        t0 = time.perf_counter()
        segments, _ = BatchedInferencePipeline(model).transcribe(
            samples, batch_size=int(mode[3:]), language="en", beam_size=5, vad_filter=True
        )
        for seg in segments:
            if not first:
                first.append(time.perf_counter() - t0)
            texts.append(seg.text)
    else:
        # faster-whisper 1.2.1's batched pipeline needs VAD (or clip_timestamps) on audio over 30 s
        batch = int(mode[1:]) if mode.startswith("b") else 0
        options = jobs.Options(language="en", vad_filter=batch > 0 or mode == "vad")
        transcriber.transcribe(model, Path(audio), options, batch_size=batch, on_segment=on_segment)
    took = time.perf_counter() - t0
    duration = audiomod.probe(Path(audio)).duration if hasattr(audiomod, "probe") else 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "took": took,
                "first": first[0] if first else None,
                "text": "".join(texts),
                "peak": peak,
                "duration": duration,
            }
        )
    )


def main() -> None:
    """Render the clip once, then run every configuration in its own process."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument(
        "--modes",
        default="seq,vad,b4,b8",
        help="seq, vad (sequential+VAD), bN (the daemon's batched N+VAD), libN (faster-whisper's batched N directly)",
    )
    ap.add_argument("--real", type=int, default=0, metavar="PASSES", help="real recordings (../shared/audio) instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models-dir", default="var/state/models")
    ap.add_argument("--child", nargs=3)
    args = ap.parse_args()
    if args.child:
        one_run(args.child[0], args.child[1], args.child[2], args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "speech.flac"
        ref = render_real(args.real, clip) if args.real else render(args.minutes, clip)
        soxi = subprocess.run(["soxi", "-D", str(clip)], check=True, capture_output=True, text=True)
        seconds = float(soxi.stdout)
        kind = f"real speech ({args.real} passes over {', '.join(REAL)})" if args.real else "espeak-ng en-us speech"
        print(f"clip: {seconds:.0f} s of {kind}, {len(ref.split())} words; threads={args.threads}\n")
        print("| model | mode | transcribe | × realtime | first segment | peak RSS | WER |")
        print("|---|---|---|---|---|---|---|")
        for name in args.models.split(","):
            for mode in args.modes.split(","):
                out = (
                    subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--threads",
                            str(args.threads),
                            "--child",
                            str(Path(args.models_dir) / name),
                            str(clip),
                            mode,
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                r = json.loads(out)
                label = {"seq": "sequential", "vad": "sequential + VAD"}.get(mode, f"batched {mode[1:]} + VAD")
                if mode.startswith("lib"):
                    label = f"library BatchedInferencePipeline {mode[3:]}"
                print(
                    f"| {name} | {label} | {r['took']:.1f} s | {seconds / r['took']:.1f} | "
                    f"{r['first']:.1f} s | {r['peak'] / 1e6:.0f} MB | {100 * wer(ref, r['text']):.1f} % |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
