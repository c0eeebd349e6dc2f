"""Speech: decoding audio, speech-to-text and (later) text-to-speech engines, chosen in the settings."""
