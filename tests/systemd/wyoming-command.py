"""make test-systemd, host side: one voice command through the forwarded Wyoming port, sent with the
`wyoming` package's own client as Home Assistant sends it; prints the transcript, exits 1 on an error.

    python wyoming-command.py PORT FILE.wav
"""

from __future__ import annotations

import asyncio
import sys
import wave

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error


async def main(port: int, path: str) -> int:
    """Send the file (its own rate/width/channels), print what comes back."""
    with wave.open(path) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        pcm = w.readframes(w.getnframes())
    step = rate // 10 * width * channels
    async with AsyncTcpClient("127.0.0.1", port, read_timeout=900) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(pcm), step):
            chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        while (event := await client.read_event()) is not None:
            if Transcript.is_type(event.type):
                print(Transcript.from_event(event).text)
                return 0
            if Error.is_type(event.type):
                print("error:", Error.from_event(event).text, file=sys.stderr)
                return 1
    print("error: the connection closed without a transcript", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]), sys.argv[2])))
