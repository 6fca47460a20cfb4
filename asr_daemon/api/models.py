"""`/v1/models`: the OpenAI-compatible model list, plus local/loaded state, load and unload.

`GET /v1/models` lists the models this host can serve (those on disk), as OpenAI's list does;
`?all=true` lists the whole catalogue, `local` telling which are on disk (`loaded`, `default` tell
the rest of the state; a loaded one has `device`, `compute_type` and `memory_bytes`, its heap or VRAM
growth measured at load);
`POST /v1/models/{name}/load` loads one now (200 when loaded); `DELETE /v1/models/{name}` unloads it
(409 while a job uses it). Absent models answer 404 with how to pull them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, QueryParameter

from asr_daemon import errors
from asr_daemon.api.auth import require_admin
from asr_daemon.api.deps import CacheDep, SettingsDep
from asr_daemon.api.schemas import Model, ModelList, error_responses
from asr_daemon.engine import modelchoice, store


def _view(settings: SettingsDep, cache: CacheDep, name: str) -> Model:
    """One model in OpenAI's shape, with this server's state beside it."""
    path = store.local_path(settings.models_dir, name)
    manifest = store.read_manifest(path) if path else None
    created = manifest.get("created") if manifest else None
    if not isinstance(created, (int, float)):
        created = path.stat().st_mtime if path else 0
    loaded = {e.name: e for e in cache.loaded()}.get(name)
    return Model(
        id=name,
        object="model",
        created=int(created),
        owned_by=(store.KNOWN[name].split("/")[0] if name in store.KNOWN else "local"),
        repository=store.KNOWN.get(name),
        local=path is not None,
        size_bytes=store.dir_size(path) if path else 0,
        default=name == settings.model,
        loading=name in cache.loading,
        loaded=loaded is not None,
        device=loaded.device if loaded else None,
        compute_type=loaded.compute_type if loaded else None,
        in_use=loaded.in_use if loaded else 0,
        memory_bytes=loaded.measured_bytes if loaded else None,
        memory_budget_bytes=loaded.size_bytes if loaded else None,
    )


def _local(settings: SettingsDep, name: str) -> tuple[str, Path]:
    """(name, path) of a local model, or the 404 that says how to pull it."""
    if name in modelchoice.DEFAULT_ALIASES:
        name = settings.model
    return modelchoice.resolve(settings.models_dir, name, settings.model)


class ModelsController(Controller):
    """Whisper models of this host."""

    path = "/v1/models"
    tags = ("models",)

    @get("/", summary="List models", responses=error_responses(400))
    async def list_models(
        self,
        settings: SettingsDep,
        cache: CacheDep,
        all_: Annotated[
            bool,
            QueryParameter(
                name="all",
                description="true: the whole catalogue (`local` says which are on disk), not only the servable models",
            ),
        ] = False,
    ) -> ModelList:
        """The models this host can serve (on disk); `?all=true` adds the catalogue's absent ones."""
        s = settings
        names = store.names(s.models_dir)
        if not all_:
            names = [n for n in names if store.local_path(s.models_dir, n) is not None]
        return ModelList(object="list", data=[_view(s, cache, n) for n in names])

    @get("/{name:str}", summary="Retrieve a model", responses=error_responses(404))
    async def get_model(self, settings: SettingsDep, cache: CacheDep, name: FromPath[str]) -> Model:
        """One model; 404 when it is neither known nor present."""
        s = settings
        if name in modelchoice.DEFAULT_ALIASES:
            name = s.model
        if name not in store.KNOWN and store.local_path(s.models_dir, name) is None:
            raise errors.ModelNotFound(name, known=False)
        return _view(s, cache, name)

    @post(
        "/{name:str}/load",
        status_code=200,
        summary="Load a model into memory",
        responses=error_responses(403, 404),
    )
    async def load(
        self, request: Request[Any, Any, Any], settings: SettingsDep, cache: CacheDep, name: FromPath[str]
    ) -> Model:
        """Load a local model now (it then unloads after the idle TTL like any other); admin keys only."""
        require_admin(request)
        if not settings.run_worker:
            raise errors.Conflict("this process runs no worker (ASR_RUN_WORKER=false): models load where jobs run")
        name, path = _local(settings, name)
        cache.release(await cache.acquire(name, path))
        return _view(settings, cache, name)

    @delete(
        "/{name:str}",
        status_code=200,
        summary="Unload a model from memory",
        responses=error_responses(403, 404, 409),
    )
    async def unload(
        self, request: Request[Any, Any, Any], settings: SettingsDep, cache: CacheDep, name: FromPath[str]
    ) -> Model:
        """Free a loaded model's memory; 409 while a job uses it; admin keys only. Files stay (`asrctl models rm`)."""
        require_admin(request)
        s = settings
        if name in modelchoice.DEFAULT_ALIASES:
            name = s.model
        if not cache.unload(name):
            entry = {e.name: e for e in cache.loaded()}.get(name)
            if entry is not None:
                raise errors.Conflict(f"model {name!r} is in use by {entry.in_use} job(s); retry when done")
            if name not in store.KNOWN and store.local_path(s.models_dir, name) is None:
                raise errors.ModelNotFound(name, known=False)
        return _view(s, cache, name)
