"""What two messages must share before one's answer is given to the other.

A sentence encoder finds "Hello! Who are you?" close to "where are you", and a message
made only of emoji close to any other such message (the encoder reads them all as one
unknown token). Two plain rules keep such near-misses from being answered:

- a message with no word characters (emoji, punctuation) is only ever answered by an
  example of exactly the same text;
- a message that shares no content word with an answer's examples gets that answer only
  when its meaning is very close to one of them (``MEANING``).

Content words are the words left after dropping English function words and chat filler
("hi", "thanks", "tell me"); they are compared by their Snowball stems, so "opening" and
"opens" count as "open".
"""

from __future__ import annotations

import re
from functools import lru_cache

import snowballstemmer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# Above this cosine similarity two sentences mean the same thing even with no content word in
# common ("when do you open" / "what are your hours"). bench/near_misses.py measures it.
MEANING = 0.8

_FILLER = {
    "hi", "hello", "hey", "hiya", "yo", "sup", "thanks", "thank", "thx", "ty", "pls", "plz", "ok", "okay",
    "yes", "yeah", "yep", "no", "nope", "lol", "haha", "hmm", "um", "uh", "oh", "wow", "cool", "nice",
    "just", "like", "really", "want", "wanna", "need", "tell", "know", "let", "say", "think", "ask",
    "help", "got", "make", "guy", "guys", "bot", "pleas", "can't", "don't", "im", "i'm", "u", "r", "ur",
}  # fmt: skip
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | _FILLER
_WORD = re.compile(r"\w+(?:'\w+)?")
_STEMMER = snowballstemmer.stemmer("english")


def normalise(text: str) -> str:
    """The form in which two inputs count as the same question: case, spacing and (with words) end marks aside.

    A text without words keeps its marks: "?" and "??" are different messages.
    """
    collapsed = re.sub(r"\s+", " ", text.casefold()).strip()
    stripped = collapsed.strip(" ?!.")
    return stripped if has_words(stripped) else collapsed


def has_words(text: str) -> bool:
    """Whether a text has a letter or digit at all: one that has none is matched by its exact text only."""
    return any(ch.isalnum() for ch in text)


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stemWord(word)


def content_stems(text: str) -> frozenset[str]:
    """The stems of a text's content words (digits count: "4 digit pin"); function words and filler do not."""
    stems = set()
    for word in _WORD.findall(text.casefold()):
        word = word.replace("_", "")
        if word and word not in STOP_WORDS and not (len(word) == 1 and word.isalpha()):
            stems.add(_stem(word))
    return frozenset(stems)
