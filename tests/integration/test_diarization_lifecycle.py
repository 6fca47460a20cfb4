"""The diarization engine's life in the process: unloaded when idle like the Whisper models (real model), and
the pyannote engine's selection, checks and run path as far as they go without its gated weights or torch."""

from __future__ import annotations

import base64
import dataclasses
import gc
import importlib.util
import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from asr_daemon import diarization
from asr_daemon.cli import doctor
from asr_daemon.config import Settings
from asr_daemon.diarization import engine, offline, pyannote
from asr_daemon.engine import audio

HAS_PYANNOTE = importlib.util.find_spec("pyannote.audio") is not None


@pytest.fixture
def state(tmp_path: Path, diarization_models: Path) -> Path:
    """A state directory whose models directory holds the real diarization weights."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "models").symlink_to(diarization_models)
    return tmp_path / "state"


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_engine_is_unloaded_after_the_idle_ttl(state: Path, speech: Callable[..., Path]) -> None:
    """After ASR_MODEL_IDLE_TTL unused, the holder lets the real engine go: weights and Silero's session freed."""
    from faster_whisper.vad import get_vad_model

    holder = diarization.holder_from_settings(Settings(state_dir=state, model_idle_ttl=0.5))
    wav = audio.decode(speech("The engine should let go of its weights when nobody needs it."))
    with holder.use() as eng:
        assert isinstance(eng, offline.OfflineEngine) and eng.net is not None
        assert eng.embed(wav) is not None  # a real use: the encoder and Silero VAD both ran
        engine_ref, net_ref = weakref.ref(eng), weakref.ref(eng.net)
    del eng
    assert get_vad_model.cache_info().currsize == 1
    assert holder.loaded() is not None  # kept for the TTL: the next request does not reload it
    assert _wait(lambda: holder.loaded() is None)
    gc.collect()
    assert net_ref() is None and engine_ref() is None  # nothing in the process still holds the weights
    assert get_vad_model.cache_info().currsize == 0
    with holder.use() as again:  # the next use loads it anew
        assert again.embed(wav) is not None


def test_engine_in_use_is_kept_and_ttl_settings_are_honoured(state: Path) -> None:
    """A use that lasts longer than the TTL keeps the engine; 0 unloads at the end of a use; -1 keeps it."""
    holder = diarization.holder_from_settings(Settings(state_dir=state, model_idle_ttl=0.2))
    eng = holder.acquire()
    time.sleep(0.5)
    assert holder.loaded() is eng  # in use: never unloaded under a run
    holder.release()
    assert _wait(lambda: holder.loaded() is None)
    at_once = diarization.holder_from_settings(Settings(state_dir=state, model_idle_ttl=0))
    with at_once.use():
        assert at_once.loaded() is not None
    assert at_once.loaded() is None
    kept = diarization.holder_from_settings(Settings(state_dir=state, model_idle_ttl=-1))
    with kept.use():
        pass
    time.sleep(0.3)
    assert kept.loaded() is not None
    assert kept.unload() and kept.loaded() is None


def _pipeline_dir(root: Path, version: str | None = "4.0.0") -> Path:
    root.mkdir(parents=True)
    head = f"version: {version}\n" if version else ""
    (root / "config.yaml").write_text(
        head + "pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n  params: {}\n"
    )
    return root


def test_pipeline_versions_are_checked(tmp_path: Path) -> None:
    """A pipeline without a version, older than 3.1, or newer than the installed pyannote.audio is refused."""
    pyannote.check_dir(_pipeline_dir(tmp_path / "ok"))
    pyannote.check_dir(_pipeline_dir(tmp_path / "v31", "3.1.0"))
    with pytest.raises(engine.Unavailable, match="states no `version:`"):
        pyannote.check_dir(_pipeline_dir(tmp_path / "none", None))
    with pytest.raises(engine.Unavailable, match=r"older than 3\.1.*speaker-diarization-community-1"):
        pyannote.check_dir(_pipeline_dir(tmp_path / "old", "2.1"))
    with pytest.raises(engine.Unavailable, match=r"needs pyannote\.audio 4\.x, this host has 3\.3\.2"):
        pyannote.check_versions((4, 0, 0), "3.3.2")
    pyannote.check_versions((3, 1, 0), "4.0.1")
    assert pyannote.config_version("version: '4.0.0'\npipeline: {}\n") == (4, 0, 0)


@pytest.mark.skipif(HAS_PYANNOTE, reason="pyannote.audio is installed: the missing-package path cannot be seen")
def test_pyannote_without_the_package_is_named_at_start_and_in_doctor_and_falls_back(
    state: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, speech: Callable[..., Path]
) -> None:
    """ASR_DIARIZATION_ENGINE=pyannote without pyannote.audio: the start-up log and doctor say what to install,
    and a request still gets speakers (the offline engine), not a 5xx."""
    settings = Settings(state_dir=state, diarization_engine="pyannote", pyannote_dir=_pipeline_dir(tmp_path / "p"))
    with pytest.raises(engine.Unavailable, match=r"pip install pyannote\.audio"):
        diarization.status(settings)
    with caplog.at_level(logging.WARNING, logger="asr_daemon.diarization"):
        diarization.announce(settings)
    record = next(r for r in caplog.records if r.message == "diarization_engine_unavailable")
    assert "pip install pyannote.audio" in record.__dict__["reason"] and record.__dict__["falls_back"]
    report = doctor.Report()
    doctor.check_diarization(report, settings)
    assert report.rows[0][0] == doctor.BAD and "pip install pyannote.audio" in report.rows[0][2]
    holder = diarization.holder_from_settings(settings)
    path = speech("Hello there, this is a single speaker talking for a little while about the weather today.")
    with caplog.at_level(logging.WARNING, logger="asr_daemon.diarization"), holder.use() as eng:
        result = eng.run(path, engine.Params(), lambda _s: None, lambda: False)
    assert eng.name == "resemblyzer" and {t.speaker for t in result.turns} == {0}
    assert any(r.message == "diarization_engine_fallback" for r in caplog.records)


def test_doctor_and_start_report_the_offline_engine_ready(state: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the weights in place the offline engine is reported ready (and without them, what to run)."""
    report = doctor.Report()
    doctor.check_diarization(report, Settings(state_dir=state))
    assert report.rows[0][0] == doctor.OK and report.rows[0][2].startswith("resemblyzer")
    with caplog.at_level(logging.INFO, logger="asr_daemon.diarization"):
        diarization.announce(Settings(state_dir=state))
    assert any(r.message == "diarization_engine_ready" for r in caplog.records)


@dataclasses.dataclass
class _DiarizeOutput:
    """Stand-in for pyannote.audio 4's `DiarizeOutput` (the real one needs torch): the field the engine reads."""

    speaker_diarization: object


def test_pipeline_output_becomes_turns() -> None:
    """pyannote's Annotation (3.x) or DiarizeOutput (4.x) → turns in time order, speakers by first appearance."""
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    ann[Segment(5.0, 7.5), "a"] = "SPEAKER_01"
    ann[Segment(0.5, 4.0), "b"] = "SPEAKER_00"
    ann[Segment(7.0, 9.25), "c"] = "SPEAKER_00"
    want = [engine.Turn(0.5, 4.0, 0), engine.Turn(5.0, 7.5, 1), engine.Turn(7.0, 9.25, 0)]
    assert pyannote.turns_from(ann) == want
    assert pyannote.turns_from(_DiarizeOutput(ann)) == want
    assert pyannote.turns_from(Annotation()) == []


def test_pipeline_hook_reports_progress_and_stops() -> None:
    """The hook given to the pipeline turns its steps into seconds done, and raises Stopped when asked."""
    seen: list[float] = []
    stop = False
    hook = pyannote.make_hook(60.0, seen.append, lambda: stop)
    hook("segmentation", None, None, 4, 1)
    hook("embeddings", np.zeros(1))  # a step without counts reports nothing
    assert seen == [15.0]
    stop = True
    with pytest.raises(engine.Stopped):
        hook("embeddings", None, None, 4, 2)


def test_known_speaker_references_become_stored_embeddings(
    state: Path, speech: Callable[..., Path], tmp_path: Path
) -> None:
    """A known speaker's reference (a data URL) is embedded with the real engine into a `KnownSpeaker` with
    an embedding and no reference: the stored JSON holds `{"name", "embedding"}` only, and it reads back
    as the unit vector the step matches clusters with."""
    from asr_daemon import jobs
    from asr_daemon.diarization import request

    ref = speech("My name is Beatrice and this is how I sound.")
    url = "data:audio/flac;base64," + base64.b64encode(ref.read_bytes()).decode()
    form = {"diarize": ["true"], "known_speaker_names[]": ["Beatrice"], "known_speaker_references[]": [url]}
    req = request.parse(form, jobs.parse_request({}, jobs.Task.TRANSCRIBE))
    holder = diarization.holder_from_settings(Settings(state_dir=state))
    done = request.embed_known(req, holder, tmp_path / "tmp")
    assert done.options.diarization is not None
    (known,) = done.options.diarization.known
    assert known.name == "Beatrice" and known.reference is None and known.embedding
    stored = done.options.to_json()["diarization"]
    assert isinstance(stored, dict) and stored["known"] == [{"name": "Beatrice", "embedding": known.embedding}]
    reread = jobs.Options.from_json(done.options.to_json()).diarization
    assert reread == done.options.diarization and reread is not None
    ((name, unit),) = request.known_vectors(reread)
    assert name == "Beatrice" and unit.shape == (256,) and abs(float(np.linalg.norm(unit)) - 1.0) < 1e-3


def _long_lie(speech: Callable[..., Path], tmp_path: Path, times: int) -> tuple[Path, float, float]:
    """A file whose container claims a twentieth of its length, the probe's head and tail honest:
    (path, seconds the probe reports, seconds that decode)."""
    import subprocess

    from tests import media
    from tests.conftest import STORY

    one = speech(STORY[2])
    long = tmp_path / f"long{times}.flac"
    subprocess.run(["sox", *[str(one)] * times, str(long)], check=True)
    lying = media.lying_middle(long, tmp_path / f"lying{times}.mka")
    declared = audio.probe(lying, audio.Limits(600.0)).duration
    return lying, declared, len(audio.decode(lying)) / audio.SAMPLE_RATE


def test_audio_decoding_past_its_declared_length_stops_the_engine(
    state: Path, speech: Callable[..., Path], tmp_path: Path
) -> None:
    """The engine decodes no more than the bound transcription uses (declared × 1.05 + 30 s): a file
    that lied to the probe about its length fails there, as its transcription would."""
    from asr_daemon import errors

    lying, declared, real = _long_lie(speech, tmp_path, 12)
    bound = declared * 1.05 + 30
    assert real > bound, (declared, real)
    eng = offline.OfflineEngine(state / "models")
    reached: list[float] = []
    with pytest.raises(errors.JobFailed, match="decodes to more than"):
        eng.run(lying, engine.Params(max_seconds=bound), reached.append, lambda: False)
    assert not reached or max(reached) <= bound


def test_a_reference_that_lies_or_holds_no_speech_is_refused(
    state: Path, speech: Callable[..., Path], tmp_path: Path
) -> None:
    """A known speaker's reference that decodes to far more than it declares, or that is silence or
    noise (VAD finds no speech: its vector would match no one), is a 400 before any job exists."""
    import subprocess

    from asr_daemon import jobs
    from asr_daemon.diarization import request
    from tests import media

    lying, declared, real = _long_lie(speech, tmp_path, 20)
    assert request.REF_MIN_S <= declared <= request.REF_MAX_S and real > 3 * declared, (declared, real)
    noise = tmp_path / "noise.flac"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(noise), "synth", "3", "whitenoise"], check=True)
    holder = diarization.holder_from_settings(Settings(state_dir=state))
    cases = {
        lying: "decodes to more than its file declares",
        media.silence(tmp_path / "silence.flac", 3, rate=16000): "no speech found",
        noise: "no speech found",
    }
    for path, why in cases.items():
        url = "data:audio/flac;base64," + base64.b64encode(path.read_bytes()).decode()
        form = {"diarize": ["true"], "known_speaker_names[]": ["Zoe"], "known_speaker_references[]": [url]}
        req = request.parse(form, jobs.parse_request({}, jobs.Task.TRANSCRIBE))
        with pytest.raises(jobs.Invalid, match=why):
            request.embed_known(req, holder, tmp_path / "tmp")
