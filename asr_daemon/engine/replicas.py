"""Loading a CTranslate2 Whisper model from a local directory, and `Replicas`: one model loaded twice
on the CPU so a lone transcription gets every core and overlapping ones split them
(`ASR_THREAD_POLICY=replicas`, docs/models.md)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def load_model(
    path: Path, device: str, compute_type: str, cpu_threads: int, num_workers: int, solo_threads: int = 0
) -> Any:
    """Load a CTranslate2 Whisper model from a local directory (never from the network).

    With `solo_threads` (CPU only) the model is loaded twice, as `Replicas`: once with that many
    threads for a transcription that runs alone, once with `num_workers` workers of `cpu_threads`
    for transcriptions that overlap.
    """
    from faster_whisper import WhisperModel  # heavy import, only where a model loads

    from asr_daemon.engine import features  # imports faster-whisper too

    def one(threads: int, workers: int) -> Any:
        model = WhisperModel(
            str(path),
            device=device,
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=workers,
            local_files_only=True,
        )
        features.install(model)  # same features, a fraction of the memory on long windows
        return model

    if solo_threads and device == "cpu":
        return Replicas(solo=one(solo_threads, 1), pool=one(cpu_threads, num_workers))
    return one(cpu_threads, num_workers)


class Replicas:
    """One model loaded twice on the CPU: `solo` with every core, `pool` with the cores split.

    CTranslate2 fixes a model's threads when it loads. A transcription that starts while no other
    runs takes `solo` (every core: a lone request is as fast as the library given the machine);
    one that starts while another runs takes `pool` (one share of the cores each: two at once give
    twice the throughput of one with every core, which threads alone do not). Anything not
    overridden here (tokenizer, feature extractor, ...) is `solo`'s, which is `pool`'s too.
    """

    def __init__(self, solo: Any, pool: Any) -> None:
        """Hold both loaded copies; nothing runs yet."""
        self.solo = solo
        self.pool = pool
        self._lock = threading.Lock()
        self._active = 0
        self._solo_busy = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.solo, name)

    @contextlib.contextmanager
    def lease(self) -> Iterator[Any]:
        """The copy for one transcription (held while its segments are iterated)."""
        with self._lock:
            solo = self._active == 0 and not self._solo_busy
            self._active += 1
            self._solo_busy = self._solo_busy or solo
        try:
            yield self.solo if solo else self.pool
        finally:
            with self._lock:
                self._active -= 1
                if solo:
                    self._solo_busy = False

    def transcribe(self, audio: Any, **kw: Any) -> tuple[list[Any], Any]:
        """`WhisperModel.transcribe` on the right copy, its segments listed while the copy is held."""
        with self.lease() as model:
            segments, info = model.transcribe(audio, **kw)
            return list(segments), info

    def unload_model(self) -> None:
        """Free both copies' weights."""
        for model in (self.solo, self.pool):
            model.model.unload_model()


@contextlib.contextmanager
def lease(model: Any) -> Iterator[Any]:
    """The model to run one transcription on: a copy from `Replicas`, or `model` itself."""
    if isinstance(model, Replicas):
        with model.lease() as chosen:
            yield chosen
    else:
        yield model
