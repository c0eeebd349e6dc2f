"""The terminal console and the scripting commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(args: list[str], tmp_path: Path, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRAINERBOT_DATA_DIR": str(tmp_path / "data")}
    env.pop("DISCORD_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "trainerbot", *args],
        input=stdin,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_piped_console_answers_each_line_and_exits(tmp_path: Path) -> None:
    (tmp_path / "faq.txt").write_text("when do you open => We open at 9\nwhere are you => Main street 1\n")
    script = (
        "!hi\n"
        "when do you open?\n"
        f"!train --attach {tmp_path / 'faq.txt'}\n"
        "when do you open?\n"
        '!test [{"input": "where are you?", "output": "Main street 1"}]\n'
        "!getfile ../../etc/passwd\n"
        "!nonsense\n"
    )
    result = run(["console"], tmp_path, script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Hi " in out
    # Before any teaching the local language model answers: some reply, and not a taught one.
    first_answer = out.splitlines()[1]
    assert first_answer.startswith("[#3] ") and len(first_answer) > 10 and "We open at 9" not in first_answer
    assert "Stored 2 positive examples from faq.txt" in out and "Model version 1 now answers" in out
    assert "] We open at 9" in out
    assert "Passed 1 of 1" in out and "test-chart.png" in out
    assert "outside the data directory" in out
    assert "Unknown command `!nonsense`" in out
    assert (tmp_path / "data" / "outbox" / "test-report.json").exists()


def test_make_run_without_a_token_says_so_in_one_line(tmp_path: Path) -> None:
    result = run(["run"], tmp_path, "!hi\n")
    assert result.stdout.splitlines()[0] == (
        "No DISCORD_TOKEN set: starting the terminal console instead of connecting to Discord."
    )
    assert "Hi " in result.stdout


def test_train_and_test_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "good.jsonl").write_text(
        '{"input": "how do I reset my password", "output": "Use the reset link"}\n'
        '{"input": "when do you open", "output": "At 9"}\n'
    )
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n')
    failed = run(["train", str(tmp_path / "good.jsonl"), str(tmp_path / "bad.jsonl")], tmp_path)
    assert failed.returncode == 1 and 'bad.jsonl, line 2: missing "output"' in failed.stderr
    trained = run(["train", str(tmp_path / "good.jsonl")], tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "Stored 2 positive examples" in trained.stdout  # the failed run stored nothing
    cases = [
        {"input": "how can I reset my password", "output": "Use the reset link"},
        {"input": "what is the airspeed of a swallow", "output": None},
        {"input": "when do you open", "output": "Use the reset link"},
    ]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    tested = run(["test", str(tmp_path / "cases.json"), "--json"], tmp_path)
    report = json.loads(tested.stdout)
    assert {k: report[k] for k in ("total", "passed", "failed", "accuracy", "unknown_recall")} == {
        "total": 3,
        "passed": 2,
        "failed": 1,
        "accuracy": pytest.approx(0.6667),
        "unknown_recall": 1.0,
    }
    assert report["failures"][0]["input"] == "when do you open" and report["failures"][0]["got"] == "At 9"


def test_console_answers_an_audio_file_given_as_the_message(tmp_path: Path) -> None:
    jfk = Path(__file__).resolve().parent / "data" / "audio" / "jfk.wav"
    result = run(["console"], tmp_path, f"{jfk}\n!hi\n", timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("> And so my fellow Americans")  # what was understood, quoted
    assert lines[1].startswith("[#") and len(lines[1]) > 6  # then an answer to it
