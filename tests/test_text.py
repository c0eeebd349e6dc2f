"""Splitting replies under Discord's limit without breaking code blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trainerbot.core.text import progress_bar, split_message

line = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\n`"), max_size=300),
    st.sampled_from(["```", "```python", "```json"]),
)


@settings(max_examples=200)
@given(st.lists(line, max_size=80), st.integers(min_value=100, max_value=2000))
def test_chunks_fit_and_code_blocks_stay_balanced(lines: list[str], limit: int) -> None:
    text = "\n".join(lines)
    chunks = split_message(text, limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    if text.count("```") % 2 == 0:
        assert all(chunk.count("```") % 2 == 0 for chunk in chunks)

    # Nothing but whitespace and the added fences is lost or gained.
    def letters(s: str) -> str:
        return "".join(s.replace("```python", "").replace("```json", "").replace("```", "").split())

    assert letters("".join(chunks)) == letters(text)


def test_short_text_is_one_chunk() -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("") == []


def test_progress_bar() -> None:
    assert progress_bar(0.5, 10) == "[█████░░░░░] 50%"
    assert progress_bar(2.0, 4) == "[████] 100%"
