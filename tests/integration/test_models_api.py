"""`/v1/models` over HTTP with a real store and cache: the OpenAI list shape, load, unload, 404 and 409."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import TestClient

from asr_daemon import errors
from asr_daemon.api.app import on_asr_error
from asr_daemon.api.models import ModelsController
from asr_daemon.config import Settings
from asr_daemon.engine import models, store
from tests.models import MISSING_TINY


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient[Litestar]]:
    """The models controller on a store holding tiny.en, with the app's own error handler."""
    if "tiny.en" not in store.pypi_available():
        pytest.fail(MISSING_TINY)
    store.import_pypi_packages(tmp_path / "models", only=["tiny.en"])
    settings = Settings(state_dir=tmp_path, model="tiny.en", device="cpu", cpu_threads=1, workers=1)
    cache = models.cache_from_settings(settings)
    app = Litestar(
        route_handlers=[ModelsController],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "cache": Provide(lambda: cache, sync_to_thread=False),
        },
        exception_handlers={errors.AsrError: on_asr_error},
    )
    with TestClient(app) as c:
        c.app.state.update(settings=settings, models=cache)  # for the tests' own looks
        yield c


def test_list_is_openai_shaped_with_local_and_loaded_state(client: TestClient[Litestar]) -> None:
    """GET /v1/models?all=true: `{object: list, data: [{id, object: model, created, owned_by, …}]}` with
    state, the whole catalogue with `local` marking what is on disk."""
    r = client.get("/v1/models", params={"all": "true"})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert set(store.KNOWN) <= set(by_id)
    tiny = by_id["tiny.en"]
    assert tiny["object"] == "model" and isinstance(tiny["created"], int) and tiny["created"] > 1_600_000_000
    assert tiny["owned_by"] == "Systran"
    assert tiny["local"] is True and tiny["loaded"] is False and tiny["default"] is True
    assert by_id["large-v3"]["local"] is False


def test_list_offers_only_servable_models_by_default(client: TestClient[Litestar]) -> None:
    """GET /v1/models lists only the models on disk (OpenAI's convention: what this host can serve);
    a bad `all` is a 400."""
    r = client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny.en"]
    assert all(m["local"] for m in r.json()["data"])
    assert client.get("/v1/models", params={"all": "false"}).json() == r.json()
    assert client.get("/v1/models", params={"all": "maybe"}).status_code == 400


def test_load_then_unload(client: TestClient[Litestar]) -> None:
    """POST …/load puts the model in memory on the CPU, with the RSS growth it cost; DELETE frees it."""
    assert client.get("/v1/models/tiny.en").json()["memory_bytes"] is None
    r = client.post("/v1/models/tiny.en/load")
    assert r.status_code == 200, r.text
    assert r.json()["loaded"] is True and r.json()["device"] == "cpu"
    assert 0 < r.json()["memory_bytes"] < 1 << 30  # tiny.en int8: tens of MB of heap, measured
    path = store.local_path(client.app.state.settings.models_dir, "tiny.en")
    assert path is not None and r.json()["memory_budget_bytes"] == models.estimate_bytes(path)
    assert client.get("/v1/models/whisper-1").json()["loaded"] is True  # the default model's alias
    r = client.delete("/v1/models/tiny.en")
    assert r.status_code == 200 and r.json()["loaded"] is False and r.json()["memory_bytes"] is None


def test_unload_of_a_model_in_use_is_409(client: TestClient[Litestar]) -> None:
    """DELETE while a job holds the model answers 409 and leaves it loaded."""
    client.post("/v1/models/tiny.en/load")
    app = client.app
    entry = next(e for e in app.state.models.loaded() if e.name == "tiny.en")
    entry.in_use += 1  # a running job's hold, as `acquire` takes it
    r = client.delete("/v1/models/tiny.en")
    assert r.status_code == 409 and "in use" in r.json()["error"]["message"]
    entry.in_use -= 1
    assert client.delete("/v1/models/tiny.en").status_code == 200


def test_absent_models_are_404_that_say_how_to_pull(client: TestClient[Litestar]) -> None:
    """Loading a known but absent model, or naming an unknown one, answers 404 with what to do."""
    r = client.post("/v1/models/large-v3/load")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
    assert "asrctl models pull large-v3" in r.json()["error"]["message"]
    assert client.get("/v1/models/no-such-model").status_code == 404
    # a name the file system refuses (found by the fuzzer: 500 from ENAMETOOLONG) is just not there
    for long_name in ("T̺̺̕o͞" * 100, "x" * 300):
        assert client.post(f"/v1/models/{long_name}/load").status_code == 404
        assert client.get(f"/v1/models/{long_name}").status_code == 404
        assert client.delete(f"/v1/models/{long_name}").status_code == 404
    assert client.get("/v1/models/large-v3").json()["local"] is False
