"""Wyoming speech-to-text for Home Assistant (issue 22), served by the daemon beside the HTTP API.

- `server`: the listener the app's lifespan starts (ASR_WYOMING_PORT, 0 turns it off).
- `handler`: one connection's events (the `wyoming` package reads and writes them).
- `recording`: any PCM a client sends → a 16 kHz mono WAV on disk.
- `commands`: a voice command as a job (kind `wyoming`) through the intake and the worker.
- `catalog`: `describe`'s models and languages, and which model a command runs on.
- `activity`: Wyoming traffic in the access log, for the idle watcher.
"""
