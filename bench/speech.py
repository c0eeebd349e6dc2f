"""Speech-to-text benchmark of the default engine on the real recordings in ../shared/audio.

    .venv/bin/python bench/speech.py [--audio ../shared/audio] [--runs 3] [--threads 2]

Prints the word error rate over all clips (as WAV and converted to OGG/Opus, Discord's
voice-message format), whether both give the same words, and the real-time factor:
seconds of work per second of audio over all clips, median of runs, from the decoded
audio (decoding is timed separately). Words are compared in lower case, without
punctuation, with the numbers zero to ten as digits (Whisper writes "10 of clubs").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jiwer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for the test helpers: the OGG/Opus conversion and the word normaliser

from tests.test_speech import to_ogg_opus, words  # noqa: E402

from trainerbot.speech.audio import decode  # noqa: E402
from trainerbot.speech.stt import WhisperEngine, bundled_whisper_path  # noqa: E402

DEFAULT_AUDIO = ROOT.parent / "shared" / "audio"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    clips = [json.loads(line) for line in (args.audio / "transcripts.jsonl").read_text().splitlines()]
    engine = WhisperEngine(str(bundled_whisper_path()), threads=args.threads)
    started = time.perf_counter()
    engine.load()
    print(f"model load: {time.perf_counter() - started:.2f} s")

    decode_seconds = 0.0
    decoded = {}
    for clip in clips:
        data = (args.audio / clip["file"]).read_bytes()
        began = time.perf_counter()
        decoded[clip["file"]] = (
            decode(data, clip["file"], max_seconds=600),
            decode(to_ogg_opus(data), "x.ogg", max_seconds=600),
        )
        decode_seconds += time.perf_counter() - began
    audio_seconds = sum(wav.seconds for wav, _ in decoded.values())

    references = [words(clip["transcript"]) for clip in clips]
    from_wav = [words(engine.transcribe(decoded[clip["file"]][0]).text) for clip in clips]
    from_ogg = [words(engine.transcribe(decoded[clip["file"]][1]).text) for clip in clips]
    for clip, heard in zip(clips, from_wav, strict=True):
        print(f"  {clip['file']}: {heard!r}  (said: {words(clip['transcript'])!r})")
    print(
        f"word error rate, {len(clips)} clips, {sum(len(r.split()) for r in references)} words: "
        f"WAV {jiwer.wer(references, from_wav):.1%}, OGG/Opus {jiwer.wer(references, from_ogg):.1%}; "
        f"same words from both: {sum(a == b for a, b in zip(from_wav, from_ogg, strict=True))} of {len(clips)}"
    )

    factors = []
    for _ in range(args.runs):
        work = sum(engine.transcribe(wav).seconds for wav, _ in decoded.values())
        factors.append(work / audio_seconds)
    print(
        f"real-time factor over {audio_seconds:.1f} s of audio, {args.threads} thread(s): median "
        f"{statistics.median(factors):.3f} ({', '.join(f'{f:.3f}' for f in factors)}); decoding WAV and OGG "
        f"of all clips took {decode_seconds:.2f} s"
    )


if __name__ == "__main__":
    main()
