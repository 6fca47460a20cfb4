"""Live transcription over WebSocket, speaking OpenAI's Realtime transcription protocol (issue 21).

`GET /v1/realtime?intent=transcription` upgrades to a session: the client sends audio
(`input_audio_buffer.append`), the server finds speech with Silero (`vad`), re-decodes the growing
utterance for partial text (`agreement`) and sends the final text per utterance. Every session is a
durable job of kind `live` (`store`): its audio is appended to `uploads/` as it arrives and each
completed utterance is stored as segments, so a crash loses nothing a client was told.

Modules: `codec` (wire formats → 16 kHz), `vad`, `agreement`, `protocol` (events in and out),
`store` (job row and audio file), `session` (one connection), `manager` (limits, heartbeats,
drain), `secrets` (client secrets for browsers), `routes` (the Litestar handlers).
"""
