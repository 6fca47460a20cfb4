"""A VAD made mid-stream (a session.update that changes its options) counts from where the stream is, and
one made during an utterance only has its end to find (real Silero on espeak-ng speech)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from asr_daemon.live import codec
from asr_daemon.live.vad import StreamingVad, VadOptions, load_model
from tests import live


def test_a_vad_started_mid_stream_reports_stream_positions(speech: Callable[..., Path]) -> None:
    """The same audio fed to a VAD that starts at sample N gives the same edges, N samples on."""
    clip = np.frombuffer(live.pcm(speech("Fresh bread and warm soup wait on the kitchen table."), 16000), "<i2")
    audio = codec.to_float(np.concatenate([np.zeros(8000, np.int16), clip, np.zeros(16000, np.int16)]))
    model = load_model()
    at_zero = StreamingVad(VadOptions(), model).feed(audio)
    later = StreamingVad(VadOptions(), model, start=123_456).feed(audio)
    assert [e.start for e in at_zero] == [True, False]
    assert [(e.start, e.sample - 123_456, e.quiet_from - 123_456 * (not e.start)) for e in later] == [
        (e.start, e.sample, e.quiet_from) for e in at_zero
    ]


def test_a_vad_made_while_speech_goes_on_finds_its_end(speech: Callable[..., Path]) -> None:
    """Made `speaking` in the middle of an utterance, the VAD reports its stop (after its start), no new start."""
    clip = np.frombuffer(live.pcm(speech("Fresh bread and warm soup wait on the kitchen table."), 16000), "<i2")
    rest = codec.to_float(np.concatenate([clip[len(clip) // 2 :], np.zeros(16000, np.int16)]))
    vad = StreamingVad(VadOptions(), load_model(), start=50_000, speaking=True)
    edges = vad.feed(rest)
    assert [e.start for e in edges] == [False]
    assert 50_000 + len(clip) // 2 - 16000 < edges[0].sample <= 50_000 + len(rest)
    assert not vad.speaking
