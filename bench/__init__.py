"""`make bench`: the daemon measured side by side with faster-whisper called directly (see docs/benchmarks.md)."""
