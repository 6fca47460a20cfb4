"""`python -m asr_daemon.cli` runs `asrctl`."""

from asr_daemon.cli import main

main()
