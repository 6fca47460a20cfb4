"""The live package's pure parts (issue 21): stable text, wire formats, the audio timeline, session
configuration, client secrets, and the Silero VAD on real speech."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from asr_daemon.live import codec, protocol, secrets, store
from asr_daemon.live.agreement import Agreement, words
from asr_daemon.live.protocol import ProtocolError, SessionConfig
from asr_daemon.live.timeline import Timeline
from asr_daemon.live.vad import StreamingVad, VadOptions, load_model
from tests import live


def test_agreement_emits_only_words_two_decodes_agree_on() -> None:
    """LocalAgreement-2: a word is sent once two hypotheses in a row agree on it and everything before it."""
    a = Agreement(first_votes=2)
    assert a.update("The quick") == ""  # nothing to agree with yet
    assert a.update("The quick brown") == "The"  # "quick" ended the older one: not yet
    assert a.update("The quick brown fox") == " quick"
    assert a.update("The quack brown fox jumps") == ""  # disagrees earlier: nothing taken back, nothing added
    assert a.text == "The quick"
    assert a.update("The quick brown fox jumps") == " brown"  # agrees with the last one that agreed
    assert a.update("The quick brown fox jumps over") == " fox"
    assert a.finish("The quick brown fox jumps over it.") == " jumps over it."
    assert a.finish("Something else") == ""  # a final that diverged adds no delta


def test_a_word_at_the_end_of_the_older_decode_is_not_stable_yet() -> None:
    """Two decodes that both end on a guessed word ("rainy" for a cut-off "lazy") do not make it stable."""
    a = Agreement(first_votes=2)
    a.update("over the rainy")
    assert a.update("over the rainy") == "over the"
    assert a.update("over the lazy dog") == ""  # heard whole: the guess was never sent
    assert a.update("over the lazy dog and") == " lazy"


def test_a_word_glued_to_the_stable_text_does_not_stall_it() -> None:
    """A decode that continues the last stable word ("round" → "round-fark") still moves the text on."""
    a = Agreement(first_votes=2)
    a.update("The quick round fox")
    a.update("The quick round fox jumps")
    assert a.text == "The quick round"
    b = Agreement(first_votes=2)
    b.update("The quick round")
    assert b.update("The quick round fox") == "The quick"
    b.update("The quick round fox")
    assert b.text == "The quick round"
    assert b.update("The quick round-fark jump over") == ""
    assert b.update("The quick round-fark jump over the") == "-fark jump"
    assert b.text == "The quick round-fark jump"


def test_agreement_needs_three_decodes_for_an_utterances_first_words() -> None:
    """With first_votes=3 two early decodes agreeing on a wrong start send nothing; later words need two."""
    a = Agreement(first_votes=3)
    assert a.update("Why do you") == ""
    assert a.update("Why do you want your") == ""  # two agree on "Why do you": not yet
    assert a.update("What your country") == ""  # the third disagrees: nothing was sent
    assert a.update("What your country can") == ""
    assert a.update("What your country can do") == "What your"  # three in a row agree (but on "country")
    assert a.update("What your country can do for") == " country can"  # then two are enough


def test_agreement_ignores_case_and_punctuation_at_word_edges() -> None:
    """`dog,` and `dog.` agree; the first word is sent without a leading space."""
    a = Agreement(first_votes=2)
    a.update(" Over the dog, and")
    assert a.update(" over the dog. And then") == "over the dog."
    assert words(" a  b") == ["a", "  b"]


def test_g711_tables_match_the_standard() -> None:
    """μ-law and A-law decode to ITU-T G.711's values at the ends of their ranges."""
    assert codec.ULAW[0x00] == -32124 and codec.ULAW[0x80] == 32124 and codec.ULAW[0xFF] == 0
    assert codec.ALAW[0xD5] == 8 and codec.ALAW[0x55] == -8 and codec.ALAW[0xAA] == 32256


def test_pcm_split_mid_sample_and_resampled_to_16k() -> None:
    """A sample split across appends is joined; one second of 24 kHz becomes one second at 16 kHz."""
    d = codec.Decoder(codec.AudioFormat("audio/pcm", 24000))
    tone = (np.sin(np.arange(24000) / 5) * 8000).astype("<i2").tobytes()
    out = [d.feed(tone[:4801]), d.feed(tone[4801:])]
    total = sum(len(x) for x in out) + len(d.flush())
    assert total == 16000
    same = codec.Decoder(codec.AudioFormat("audio/pcm", 16000))
    assert len(same.feed(b"\x01\x00\x02")) == 1 and list(same.feed(b"\x00")) == [2]


def test_ulaw_is_upsampled_from_8k() -> None:
    """One second of 8 kHz μ-law becomes one second of 16 kHz samples."""
    d = codec.Decoder(codec.AudioFormat("audio/pcmu", 8000))
    assert len(d.feed(b"\xff" * 8000)) + len(d.flush()) == 16000


def test_timeline_slices_and_drops_by_absolute_index() -> None:
    """Slices are by sample index since the start, across pieces, after older samples were dropped."""
    t = Timeline()
    for i in range(5):
        t.append(np.full(10, i, dtype=np.float32))
    assert list(t.slice(8, 12)) == [0, 0, 1, 1]
    t.drop_before(15)
    assert t.start == 15 and t.held == 35
    assert list(t.slice(0, 22)) == [1] * 5 + [2] * 2
    t.drop_before(100)
    assert t.held == 0 and len(t.slice(0, 100)) == 0


def test_session_update_ga_and_beta_shapes() -> None:
    """GA and beta updates set format, transcription and VAD; null turn detection means manual commits."""
    cfg = protocol.parse_session("session.update", live.session_update(rate=16000, vad=None, language="en")["session"],
                                 SessionConfig())  # fmt: skip
    assert cfg.format == codec.AudioFormat("audio/pcm", 16000) and cfg.vad is None and cfg.language == "en"
    beta = protocol.parse_session(
        "transcription_session.update",
        {"input_audio_format": "g711_ulaw", "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
        cfg,
    )
    assert beta.format.type == "audio/pcmu" and beta.vad == VadOptions(silence_duration_ms=300)
    assert beta.language == "en"  # untouched fields stay
    view = beta.view("sess_x", "job", "tiny.en")
    assert view["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert view["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 300


@pytest.mark.parametrize(
    "session",
    [
        {"type": "realtime"},
        {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}},
        {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}}},
        {"audio": {"input": {"turn_detection": {"prefix_padding_ms": True}}}},
        {"audio": {"input": {"transcription": {"prompt": "x" * 3000}}}},
        {"audio": {"input": {"transcription": {"prompt": "a\x00b"}}}},  # PostgreSQL text cannot hold it
        {"audio": []},
    ],
)
def test_session_update_refuses_what_it_cannot_serve(session: dict[str, object]) -> None:
    """Values outside what the server serves raise a ProtocolError naming the parameter."""
    with pytest.raises(ProtocolError) as exc:
        protocol.parse_session("session.update", session, SessionConfig())
    assert exc.value.code in {"invalid_value", "invalid_type"} and exc.value.message


def test_client_secrets_expire_and_are_found_by_value_only() -> None:
    """A secret is found until it expires; the subprotocol carries it and is never the one chosen."""
    now = [1000.0]
    store_ = secrets.ClientSecrets(clock=lambda: now[0])
    value, secret = store_.create(7, "k", False, 60, None)
    assert value.startswith("ek_") and store_.lookup(value) == secret
    assert store_.lookup(value + "x") is None
    now[0] += 61
    assert store_.lookup(value) is None
    scope = {"subprotocols": ["realtime", f"openai-insecure-api-key.{value}"]}
    assert secrets.subprotocol_token(scope) == value
    assert secrets.chosen_subprotocol(scope) == "realtime"
    assert secrets.chosen_subprotocol({"subprotocols": [f"openai-insecure-api-key.{value}"]}) is None


def test_wav_header_follows_the_appended_audio(tmp_path: Path) -> None:
    """The stored WAV's header sizes are right after every append (a crash leaves a decodable file)."""
    f = store.AudioFile(tmp_path / "live-x")
    f.append(b"\x01\x00" * 16000)
    raw = (tmp_path / "live-x").read_bytes()
    assert struct.unpack("<I", raw[40:44])[0] == 32000 and struct.unpack("<I", raw[4:8])[0] == 36 + 32000
    assert f.seconds == 1.0
    f.close()


def test_vad_finds_speech_between_silences(speech: Callable[..., Path]) -> None:
    """Silero finds one start near the speech's start and one stop after the silence that follows it."""
    clip = np.frombuffer(live.pcm(speech("Fresh bread and warm soup wait on the kitchen table."), 16000), "<i2")
    audio = codec.to_float(np.concatenate([np.zeros(16000, np.int16), clip, np.zeros(24000, np.int16)]))
    vad = StreamingVad(VadOptions(silence_duration_ms=500), load_model())
    edges = [e for i in range(0, len(audio), 1600) for e in vad.feed(audio[i : i + 1600])]
    assert [e.start for e in edges] == [True, False], edges
    assert 0.8 < edges[0].sample / 16000 < 1.4
    assert 1.0 + len(clip) / 16000 < edges[1].sample / 16000 < 1.0 + len(clip) / 16000 + 1.2


def test_vad_reports_where_the_silence_began(speech: Callable[..., Path]) -> None:
    """While the speaker is quiet `quiet_from` marks the quiet run's start (the speculative final decode
    starts from it); the stop edge carries the same point; once speech has stopped it is cleared."""
    clip = np.frombuffer(live.pcm(speech("Fresh bread and warm soup wait on the kitchen table."), 16000), "<i2")
    audio = codec.to_float(np.concatenate([np.zeros(8000, np.int16), clip, np.zeros(24000, np.int16)]))
    vad = StreamingVad(VadOptions(silence_duration_ms=500), load_model())
    marks: list[int | None] = []
    edges = []
    for i in range(0, len(audio), 1600):
        edges += vad.feed(audio[i : i + 1600])
        marks.append(vad.quiet_from)
    stop = edges[-1]
    assert not stop.start and stop.quiet_from > 0 and stop.sample - stop.quiet_from >= 0.5 * 16000
    assert stop.quiet_from in marks  # it was known while the silence grew, before the edge
    assert 8000 + len(clip) - 16000 < stop.quiet_from < 8000 + len(clip) + 4000
    assert marks[-1] is None and not vad.speaking
