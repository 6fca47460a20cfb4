"""Speech engines: audio decoding, features, model files and the cache, faster-whisper/CTranslate2
transcription (sequential and batched)."""
