"""asr-server: an on-demand speech-to-text daemon (faster-whisper behind an OpenAI-compatible API)."""

from __future__ import annotations

__version__ = "0.1.0"
