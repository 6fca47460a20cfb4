"""Form fields checked one by one as they arrive, so a bad request is refused before its audio is stored.

`uploads.receive` hands each completed field to a `FieldCheck`; it runs the same rules as the full
check in `intake` (the same functions, so the same messages and statuses), limited to what one field
can tell on its own: its value (`jobs.parse_request` on that field alone), the model being on this
host, a webhook having a signing secret, a diarization count being in range. What needs several
fields (min_speakers against max_speakers, known speakers pairing up, known-speaker audio) is
checked once the whole form is in, as before.
"""

from __future__ import annotations

import asyncio

from asr_daemon import errors, jobs
from asr_daemon.config import Settings
from asr_daemon.diarization import request as diarization_request
from asr_daemon.engine import modelchoice

#: diarization fields whose value can be judged alone (the others need their pair or decode audio)
_SPEAKER_COUNTS = frozenset({"num_speakers", "min_speakers", "max_speakers"})


class FieldCheck:
    """`uploads.FieldCheck` for one submission: raises the domain error the full check would raise."""

    def __init__(
        self, settings: Settings, task: jobs.Task, *, allow_task_field: bool, diarize_only: bool = False
    ) -> None:
        self.settings = settings
        self.task = task
        self.allow_task_field = allow_task_field
        self.diarize_only = diarize_only  # /v1/audio/diarization: no Whisper model takes part

    async def __call__(self, name: str, values: list[str]) -> None:
        """Check field `name` (`values`: every value of that name received so far)."""
        s = self.settings
        form = {name: values}
        try:
            req = jobs.parse_request(form, self.task, allow_task_field=self.allow_task_field)
            if name == "diarize":
                diarization_request.parse(form, req)
            elif name in _SPEAKER_COUNTS:  # judged as if diarize=true came too (that pairing is checked later)
                diarization_request.parse({**form, "diarize": ["true"]}, req)
        except jobs.Invalid as exc:
            raise errors.BadRequest(str(exc)) from None
        if name == "webhook_url" and req.webhook_url and s.webhook_secret is None:
            raise errors.BadRequest(WEBHOOK_NEEDS_SECRET)
        if name == "model" and not self.diarize_only:
            await asyncio.to_thread(modelchoice.resolve, s.models_dir, req.model, s.model)


WEBHOOK_NEEDS_SECRET = (
    "webhook_url needs a signing secret on the server (webhooks are always signed): "
    "the operator sets ASR_WEBHOOK_SECRET"
)
