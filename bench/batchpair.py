"""Probe (issue 17): two requests' 30 s windows in one `generate` call, against one after the other.

`python -m bench.batchpair [--model base] [--rounds 5]` loads the model once with every core and
times, per round, the decode (`WhisperModel.model.generate`, beam 5, with timestamps, as the daemon
decodes) of two different 11 s windows: one after the other (the library's sequential throughput),
and both in one batch of 2 (what a batcher gathering concurrent jobs' windows would run). Encoding is
included (generate encodes its features). The pair's gain is sequential ÷ batched; `split` reached
1.47–1.48× at the library level (section 10), so a batcher is worth building only above that.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench import clips, stack


def main(argv: list[str] | None = None) -> int:
    """Measure and print the pair gain."""
    import ctranslate2
    import numpy as np
    from faster_whisper import WhisperModel, decode_audio
    from faster_whisper.tokenizer import Tokenizer

    ap = argparse.ArgumentParser(prog="python -m bench.batchpair", description=__doc__)
    ap.add_argument("--model", default="base")
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    m = WhisperModel(str(stack.models_dir() / a.model), device="cpu", compute_type="int8", cpu_threads=cores)
    first = decode_audio(str(clips.short().path))
    other = decode_audio(str(clips.shared("multilingual.mp3").path))[: len(first)]  # its English opening
    feats = []
    for samples in (first, other):
        f = m.feature_extractor(samples)
        f = np.pad(f, ((0, 0), (0, max(0, 3000 - f.shape[-1]))))[:, :3000]
        feats.append(f.astype(np.float32))
    tok = Tokenizer(m.hf_tokenizer, m.model.is_multilingual, task="transcribe", language="en")
    prompt = m.get_prompt(tok, [], without_timestamps=False)
    kw: dict[str, Any] = {"beam_size": 5, "max_length": 448, "suppress_blank": True, "return_scores": True}

    def gen(batch: list[np.ndarray]) -> None:
        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(batch)))
        m.model.generate(x, [prompt] * len(batch), **kw)

    gen(feats[:1])
    gen(feats)
    seq, pair = [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        gen(feats[:1])
        gen(feats[1:])
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gen(feats)
        pair.append(time.perf_counter() - t0)
    s, p = statistics.median(seq), statistics.median(pair)
    print(
        f"{a.model}, {cores} cores, {a.rounds} rounds: two windows one after the other {s:.3f} s "
        f"({min(seq):.3f}–{max(seq):.3f}), in one batch {p:.3f} s ({min(pair):.3f}–{max(pair):.3f}); "
        f"pair gain {s / p:.2f}× (split at the library level: 1.47×)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
