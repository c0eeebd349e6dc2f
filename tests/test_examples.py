"""Example files: every format, and every kind of mistake named by file and line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainerbot.errors import InvalidInput
from trainerbot.learning.examples import parse_examples, parse_inline
from trainerbot.types import Example

PAIRS = [Example("how do I reset my password", "Use the reset link"), Example("when do you open", "At 9")]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("list.json", json.dumps([{"input": e.input, "output": e.output} for e in PAIRS])),
        ("original.json", json.dumps({"data": [{"input": e.input, "output": e.output} for e in PAIRS]})),
        ("lines.jsonl", "\n".join(json.dumps({"input": e.input, "output": e.output}) for e in PAIRS) + "\n"),
        ("io.csv", "input,output\n" + "".join(f'"{e.input}",{e.output}\n' for e in PAIRS)),
        ("labels.csv", "text,label\n" + "".join(f"{e.input},{e.output}\n" for e in PAIRS)),
        ("arrows.txt", "# comment\n\n" + "".join(f"{e.input} => {e.output}\n" for e in PAIRS)),
        ("no-suffix", "".join(f"{e.input} => {e.output}\n" for e in PAIRS)),
    ],
)
def test_every_format_gives_the_same_examples(name: str, data: str) -> None:
    assert parse_examples(data.encode(), name) == PAIRS


def test_negative_flag_and_per_item_override() -> None:
    data = json.dumps([{"input": "a", "output": "b"}, {"input": "c", "output": "d", "positive": True}])
    assert [e.positive for e in parse_examples(data.encode(), "x.json", positive=False)] == [False, True]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("x.json", '[{"input": "a", "output": "b"},\n {"input": "c"}]', 'x.json, line 2: missing "output"'),
        ("x.json", '{"data": [\n{"input": "a", "output": 3}]}', "x.json, line 2: output must be text, got int"),
        ("x.json", '[{"input": "a", "output": "b"}\n {"input": "c"}]', "x.json, line 2, column 2: invalid JSON"),
        ("x.json", '{"other": []}', 'x.json, line 1: expected a list of examples or an object with a "data" list'),
        ("x.json", "[]", "x.json: no examples found"),
        ("x.jsonl", '{"input": "a", "output": "b"}\n{"input": ""', "x.jsonl, line 2: invalid JSON"),
        ("x.jsonl", '{"input": "a", "output": "b"}\n["a", "b"]', "x.jsonl, line 2: each example must be an object"),
        ("x.csv", "q,a\na,b\n", "x.csv, line 1: the header must name an input column"),
        ("x.csv", "input,output\na,b\nc\n", "x.csv, line 3: expected 2 columns, found 1"),
        ("x.csv", "input,output\na,b\n ,d\n", "x.csv, line 3: input is empty"),
        ("x.txt", "a => b\nno arrow here\n", "x.txt, line 2: expected `question => answer`"),
        ("x.txt", "a => \n", "x.txt, line 1: there is no answer after `=>`"),
        ("x.txt", "a => " + "b" * 2001, "x.txt, line 1: output is 2001 characters long; the limit is 2000"),
        ("x.txt", "a\x00 => b", "x.txt, line 1: input contains a NUL character"),
    ],
)
def test_mistakes_name_the_file_the_line_and_the_problem(name: str, data: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_examples(data.encode(), name)
    assert str(raised.value).startswith(message)


def test_non_utf8_is_refused_with_its_line() -> None:
    with pytest.raises(InvalidInput, match=r"latin.txt, line 2: not UTF-8 text"):
        parse_examples("a => b\ncafé => c\n".encode("latin-1"), "latin.txt")


def test_byte_order_mark_is_accepted() -> None:
    assert parse_examples("\ufeffa => b".encode(), "bom.txt") == [Example("a", "b")]


def test_inline_examples() -> None:
    assert parse_inline("how do I reset my password => Use the reset link") == [
        Example("how do I reset my password", "Use the reset link")
    ]


@given(st.binary(max_size=300), st.sampled_from(["f.json", "f.jsonl", "f.csv", "f.txt"]))
def test_any_bytes_either_parse_or_raise_invalid_input(data: bytes, name: str) -> None:
    try:
        examples = parse_examples(data, name)
    except InvalidInput as exc:
        assert str(exc).startswith(name)
    else:
        assert examples and all(e.input and e.output for e in examples)
