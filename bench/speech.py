"""Speech benchmark of the default engines: Whisper on tests/data/audio's recordings, and Piper's voice.

    .venv/bin/python bench/speech.py [--audio tests/data/audio] [--runs 3] [--threads 2]

Prints the word error rate over all clips (as WAV and converted to OGG/Opus, Discord's
voice-message format), whether both give the same words, and the real-time factor:
seconds of work per second of audio over all clips, median of runs, from the decoded
audio (decoding is timed separately). Words are compared in lower case, without
punctuation, with the numbers zero to ten as digits (Whisper writes "10 of clubs").

Then text to speech: the time from a reply's text to its first 48 kHz stereo 20 ms
frame, the real-time factor of the whole reply, and ten sentences spoken by Piper and
transcribed by Whisper.
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
from tests.test_tts import SENTENCES  # noqa: E402

from trainerbot.speech.audio import decode, discord_frames, wav_bytes  # noqa: E402
from trainerbot.speech.stt import WhisperEngine, bundled_whisper_path  # noqa: E402
from trainerbot.speech.tts import PiperEngine, bundled_voice  # noqa: E402

DEFAULT_AUDIO = ROOT / "tests" / "data" / "audio"
REPLY = (
    "Thanks for asking! The library opens at nine in the morning and closes at six. "
    "Please bring your card. The quiet room is on the second floor, next to the lifts. "
    "Coffee is not allowed inside, but there is a cafe across the street."
)


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
    speech(engine, args.runs)


def speech(recogniser: WhisperEngine, runs: int) -> None:
    """Text to speech: the first 20 ms frame of a reply, the real-time factor, and a round trip."""
    bundled = bundled_voice()
    assert bundled is not None
    voice = PiperEngine(*bundled)
    started = time.perf_counter()
    voice.load()
    print(f"voice load (with one warm-up sentence): {time.perf_counter() - started:.2f} s")
    firsts, factors = [], []
    for _ in range(max(runs, 5)):
        began = time.perf_counter()
        frames = discord_frames((piece.pcm, piece.rate) for piece in voice.speak(REPLY))
        next(frames)
        firsts.append(time.perf_counter() - began)
        frames.close()
        began = time.perf_counter()
        pieces = list(voice.speak(REPLY))
        factors.append((time.perf_counter() - began) / sum(p.seconds for p in pieces))
    print(
        f"reply text to first Discord frame (a {len(REPLY)}-character reply): median "
        f"{statistics.median(firsts) * 1000:.0f} ms ({', '.join(f'{f * 1000:.0f}' for f in firsts)})"
    )
    print(
        f"speech real-time factor: median {statistics.median(factors):.3f} ({', '.join(f'{f:.3f}' for f in factors)})"
    )
    heard = []
    for sentence in SENTENCES:
        pcm = b"".join(piece.pcm for piece in voice.speak(sentence))
        heard.append(words(recogniser.transcribe(decode(wav_bytes(pcm, 22050), "s.wav", max_seconds=60)).text))
    references = [words(s) for s in SENTENCES]
    print(
        f"round trip (Piper, then Whisper), {len(SENTENCES)} sentences: word error rate "
        f"{jiwer.wer(references, heard):.1%}"
    )
    for said, understood in zip(references, heard, strict=True):
        if said != understood:
            print(f"  said {said!r}, heard {understood!r}")


if __name__ == "__main__":
    main()
