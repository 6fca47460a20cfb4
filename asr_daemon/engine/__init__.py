"""Speech engines: audio decoding, features, model files (the store, downloads) and the cache,
faster-whisper/CTranslate2 transcription (sequential and batched)."""
