"""Splitting replies under Discord's limit without breaking code blocks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trainerbot.core.text import PageSplitter, progress_bar, split_message

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


@settings(max_examples=150)
@given(st.lists(line, max_size=60), st.integers(min_value=100, max_value=2000), st.randoms(use_true_random=False))
def test_a_streamed_reply_is_cut_exactly_like_the_finished_one(lines: list[str], limit: int, rnd) -> None:
    text = "\n".join(lines)
    splitter = PageSplitter(limit)
    sent: list[str] = []
    position = 0
    while position < len(text):
        position += rnd.randint(1, 40)
        splitter.feed(text[:position])
        assert splitter.pages[: len(sent)] == sent  # a page once full never changes
        sent = list(splitter.pages)
        assert len(splitter.current) <= limit
    assert splitter.finish() == split_message(text, limit)


def test_cuts_prefer_paragraphs_then_sentences_and_keep_code_blocks_whole() -> None:
    prose = "This is a sentence about the bot. " * 20  # 680 characters, sentences only
    code = "```python\n" + "\n".join(f"print({i})" for i in range(60)) + "\n```"  # about 620 characters
    text = f"{prose.strip()}\n\n{prose.strip()}\n\n{code}\n\nThe end."
    pages = split_message(text, 1000)
    assert pages[0] == prose.strip()  # at the blank line, not mid-paragraph
    assert code in pages[2]  # the block fits on one page, so it is not cut
    assert pages[-1].endswith("The end.")
    one_paragraph = split_message(prose * 3, 1000)
    assert all(page.endswith(".") for page in one_paragraph)  # at sentence ends


def test_a_code_block_longer_than_a_page_is_closed_and_reopened_with_its_language() -> None:
    code = "```json\n" + "\n".join(f'  {{"n": {i}}}' for i in range(200)) + "\n```"
    pages = split_message("Here it is:\n\n" + code, 1000)
    assert len(pages) >= 3
    assert pages[0] == "Here it is:"
    assert all(page.startswith("```json\n") and page.endswith("\n```") for page in pages[1:])
    assert '  {"n": 57}' in "".join(pages)  # indentation inside the block survives a cut
