"""Examples and the file formats they are taught in: JSON, JSONL, CSV and `input => output` lines.

Every parser is all-or-nothing: the first problem raises ``InvalidInput`` naming the
file, the line and what is wrong, and nothing of that file is returned.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePath

from trainerbot.errors import InvalidInput
from trainerbot.learning.archives import Document, archive_kind, is_zip, read_zip, shown
from trainerbot.types import Example

MAX_TEXT = 2000  # a taught answer must fit in one Discord message
ARROW = "=>"
INPUT_KEYS = ("input", "text", "question", "prompt")
OUTPUT_KEYS = ("output", "label", "category", "intent", "answer")
CSV_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}  # a "positive" column
EXAMPLE_SUFFIXES = {".json", ".jsonl", ".csv", ".txt", ".md", ".tsv"}
READABLE_SUFFIXES = EXAMPLE_SUFFIXES | {".zip"}  # what a directory is searched for: example files and zips of them
SNAPSHOT_MANIFEST = "manifest.json"  # what a dataset snapshot adds beside its files (see datasets.snapshot)
# Documents of office programs, known by their names: people keep FAQs in them.
OFFICE_DOCUMENTS = {
    ".xlsx": "a spreadsheet",
    ".xls": "a spreadsheet",
    ".ods": "a spreadsheet",
    ".numbers": "a spreadsheet",
    ".docx": "a text document",
    ".doc": "a text document",
    ".odt": "a text document",
    ".pages": "a text document",
    ".rtf": "a text document",
    ".pdf": "a PDF document",
}
# Files people send by mistake, known by their first bytes; only used to explain bytes that are no text.
BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"OggS": "an OGG audio file",
    b"RIFF": "a RIFF (WAV or WebP) file",
    b"ID3": "an MP3 audio file",
    b"fLaC": "a FLAC audio file",
    b"\x7fELF": "a program",
    b"MZ": "a Windows program",
    b"SQLite format 3\x00": "an SQLite database",
}


# A flag of `!train` (core/teaching.py takes them out of the command's text) at the end of a text.
_FLAG_AT_END = re.compile(
    r"(?:^|\s)(positive\s*[=:]\s*(?:true|false|yes|no)|--?(?:negative|positive)|--global)\s*$", re.IGNORECASE
)


class _Problem(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _clean(value: object, what: str, line: int | None) -> str:
    if not isinstance(value, str):
        raise _Problem(line, f"{what} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise _Problem(line, f"{what} is empty")
    if len(text) > MAX_TEXT:
        raise _Problem(line, f"{what} is {len(text)} characters long; the limit is {MAX_TEXT}")
    if "\x00" in text:
        raise _Problem(line, f"{what} contains a NUL character")
    if any("\ud800" <= c <= "\udfff" for c in text):  # only typed text can hold these; they cannot be stored
        raise _Problem(line, f"{what} contains a lone surrogate, which is not valid text")
    return text


def checked_text(value: str, what: str) -> str:
    """Typed text (a form's field) as a file's line would be taken: stripped, or why it cannot be one."""
    try:
        return _clean(value, what, None)
    except _Problem as problem:
        raise InvalidInput(f"{problem.message[:1].upper()}{problem.message[1:]}.") from None


def _from_mapping(item: object, positive: bool, line: int | None) -> Example:
    if not isinstance(item, dict):
        raise _Problem(line, 'each example must be an object like {"input": ..., "output": ...}')
    input_key = next((k for k in INPUT_KEYS if k in item), None)
    output_key = next((k for k in OUTPUT_KEYS if k in item), None)
    if input_key is None:
        raise _Problem(line, 'missing "input"')
    if output_key is None:
        raise _Problem(line, 'missing "output"')
    flag = item.get("positive", positive)
    if not isinstance(flag, bool):
        raise _Problem(line, '"positive" must be true or false')
    return Example(_clean(item[input_key], input_key, line), _clean(item[output_key], output_key, line), flag)


def binary_kind(data: bytes) -> str | None:
    """What a file is when its first bytes show it is no text file (an archive, an image, audio, ...)."""
    return archive_kind(data) or next((kind for magic, kind in BINARY_MAGIC.items() if data.startswith(magic)), None)


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (with or without a byte-order mark), or a clear error that says what the file is instead."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        kind = binary_kind(data)
        if kind is not None:
            raise InvalidInput(f"{name} is {kind}, not a text file.") from None
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{name}, line {line}: not UTF-8 text (byte {exc.start})") from None
    # Some binary files happen to be valid UTF-8; their NUL bytes give them away (text has none).
    if "\x00" in text[:4096] and (kind := binary_kind(data)) is not None:
        raise InvalidInput(f"{name} is {kind}, not a text file.")
    return text


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _item_offsets(text: str, start: int) -> list[int]:
    """Offsets of the elements of the JSON array whose '[' is at ``start`` (the text is valid JSON)."""
    decoder = json.JSONDecoder()
    offsets, i = [], _skip_space(text, start + 1)
    while text[i] != "]":
        offsets.append(i)
        _, i = decoder.raw_decode(text, i)
        i = _skip_space(text, i)
        if text[i] == ",":
            i = _skip_space(text, i + 1)
    return offsets


def _members(text: str) -> Iterator[tuple[object, int, int]]:
    """Each member of the top-level JSON object (the text is a valid one): its key, and where the key
    and the value start."""
    decoder = json.JSONDecoder()
    i = _skip_space(text, _skip_space(text, 0) + 1)
    while text[i] != "}":
        at = i
        key, i = decoder.raw_decode(text, i)
        i = _skip_space(text, _skip_space(text, i) + 1)  # past ':'
        yield key, at, i
        _, i = decoder.raw_decode(text, i)
        i = _skip_space(text, i)
        if text[i] == ",":
            i = _skip_space(text, i + 1)


def _data_array_offset(text: str) -> int:
    """Offset of the '[' of the top-level "data" key (the text is a valid JSON object)."""
    return next(value for key, _, value in _members(text) if key == "data")


def load_json_document(text: str, name: str, what: str = "examples") -> tuple[list[object], list[int]]:
    """A JSON list, or an object with a "data" list: its items and the line each starts on (``what``: of what)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{name}, line {exc.lineno}, column {exc.colno}: invalid JSON ({exc.msg})\n{_pointer(text, exc)}"
        ) from None
    except RecursionError:  # [[[[... deeper than Python's stack: not a list of examples anyway
        raise InvalidInput(f"{name}: the JSON is nested too deeply to be a list of {what}") from None
    if isinstance(document, list):
        items, start = document, _skip_space(text, 0)
    elif isinstance(document, dict) and isinstance(document.get("data"), list):
        items, start = document["data"], _data_array_offset(text)
    else:
        raise InvalidInput(f'{name}, line 1: expected a list of {what} or an object with a "data" list')
    return items, [_line_of(text, offset) for offset in _item_offsets(text, start)]


def _pointer(text: str, exc: json.JSONDecodeError) -> str:
    """The broken line with a caret under the column where parsing stopped."""
    lines = text.splitlines()
    line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
    shown = line[max(0, exc.colno - 60) : exc.colno + 20]
    caret = " " * (min(exc.colno, 60) - 1) + "^"
    return f"```\n{shown}\n{caret}\n```"


def _parse_json(text: str, name: str, positive: bool) -> list[Example]:
    pairs = _questions_and_answers(text)
    if pairs is not None:
        return [
            Example(_clean(q, "the question", line), _clean(a, "the answer", line), positive) for q, a, line in pairs
        ]
    items, lines = load_json_document(text, name)
    return [_from_mapping(item, positive, line) for item, line in zip(items, lines, strict=True)]


def _questions_and_answers(text: str) -> list[tuple[str, str, int]] | None:
    """`{"question": "answer", ...}`, the way people write an FAQ by hand: each pair and its line.

    None for any other JSON (a list, an object with "data", a broken file), which
    ``load_json_document`` reads or explains. Repeated questions are all kept, as a list's would be.
    """
    try:
        pairs = json.loads(text, object_pairs_hook=lambda pairs: pairs)
    except (ValueError, RecursionError):
        return None
    if not pairs or not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        return None  # a list, or not an object
    if any(key == "data" or not isinstance(value, str) for key, value in pairs):
        return None
    lines = [_line_of(text, at) for _, at, _ in _members(text)]
    return [(key, value, line) for (key, value), line in zip(pairs, lines, strict=True)]


def _parse_jsonl(text: str, positive: bool) -> list[Example]:
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _Problem(number, f"invalid JSON at column {exc.colno} ({exc.msg})") from None
        except RecursionError:
            raise _Problem(number, "the JSON is nested too deeply to be an example") from None
        examples.append(_from_mapping(item, positive, number))
    return examples


def _parse_csv(text: str, positive: bool, delimiter: str) -> list[Example]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        return []
    input_col = next((header.index(k) for k in INPUT_KEYS if k in header), None)
    output_col = next((header.index(k) for k in OUTPUT_KEYS if k in header), None)
    # Optional, as "positive" is in JSON: an exported base keeps its answers the bot must not give.
    positive_col = header.index("positive") if "positive" in header else None
    if input_col is None or output_col is None:
        raise _Problem(
            1,
            "the header must name an input column (input or text) and an output column "
            f"(output or label); found: {', '.join(header) or 'nothing'}",
        )
    examples = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(input_col, output_col):
                raise _Problem(reader.line_num, f"expected {len(header)} columns, found {len(row)}")
            flag = row[positive_col].strip().lower() if positive_col is not None and positive_col < len(row) else ""
            if flag and flag not in CSV_FLAGS:
                raise _Problem(reader.line_num, f"positive must be true or false, not `{flag[:20]}`")
            examples.append(
                Example(
                    _clean(row[input_col], header[input_col], reader.line_num),
                    _clean(row[output_col], header[output_col], reader.line_num),
                    CSV_FLAGS[flag] if flag else positive,
                )
            )
    except csv.Error as exc:
        raise _Problem(reader.line_num, f"malformed CSV ({exc})") from None
    return examples


def _no_flag(text: str, what: str, number: int) -> None:
    """A line of a file takes no flags: one that ends with a flag of `!train` is refused, not stored with it.

    In a typed `!train` the flag applies to every example; copied into a file, it would silently
    become the end of a question or an answer. Only the end is checked, where a flag is put:
    `--negative` inside an answer (about command lines, say) is the answer's own text.
    """
    found = _FLAG_AT_END.search(text)
    if found is not None:
        raise _Problem(
            number,
            f"{what} ends with `{found.group(1)}`, a flag of the `!train` command; lines of a file take no flags. "
            "Put it in the command (`!train positive=false` with the file) to teach the whole file as answers "
            'I must not give, or use a .jsonl file with `"positive": false` on the examples it is for',
        )


def parse_lines(text: str, positive: bool) -> list[Example]:
    """`input => output`, one example a line; blank lines and lines starting with # are skipped."""
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if ARROW not in stripped:
            raise _Problem(number, f"expected `question {ARROW} answer`")
        question, _, answer = stripped.partition(ARROW)
        _no_flag(question, "the question", number)
        _no_flag(answer, "the answer", number)
        if not question.strip() or not answer.strip():
            missing = "question before" if not question.strip() else "answer after"
            raise _Problem(number, f"there is no {missing} `{ARROW}`")
        examples.append(Example(_clean(question, "input", number), _clean(answer, "output", number), positive))
    return examples


def parse_examples(data: bytes | str, name: str, positive: bool = True) -> list[Example]:
    """Parses one file's examples by its extension (text lines when it has none we know)."""
    text = data if isinstance(data, str) else decode_text(data, name)
    suffix = PurePath(name).suffix.lower()
    try:
        if suffix == ".json":
            examples = _parse_json(text, name, positive)
        elif suffix == ".jsonl":
            examples = _parse_jsonl(text, positive)
        elif suffix in (".csv", ".tsv"):
            examples = _parse_csv(text, positive, "\t" if suffix == ".tsv" else csv_delimiter(text))
        else:
            examples = parse_lines(text, positive)
    except _Problem as problem:
        where = f"{name}, line {problem.line}" if problem.line else name
        raise InvalidInput(f"{where}: {problem.message}") from None
    if not examples:
        raise InvalidInput(f"{name}: no examples found")
    return examples


def csv_delimiter(text: str) -> str:
    """`,`, or `;` where the header has only those: spreadsheets in many languages save CSV with `;`."""
    header = text.lstrip("\ufeff").partition("\n")[0]
    return ";" if ";" in header and "," not in header else ","


def is_snapshot_manifest(name: str, data: bytes) -> bool:
    """The manifest a dataset snapshot carries at its root (``name`` relative to it): about examples, not one."""
    if name != SNAPSHOT_MANIFEST:
        return False
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and {"dataset", "files"} <= manifest.keys()


def is_example_name(name: str) -> bool:
    return PurePath(name).suffix.lower() in EXAMPLE_SUFFIXES


def read_documents(data: bytes, name: str, limit: int) -> list[Document]:
    """The example files one file or upload holds: itself, or each member of a zip archive, checked.

    Whether it is an archive is decided by its bytes, not its name; ``limit`` caps what an
    archive may unpack to. The one reader for every command that reads example files.
    """
    office = OFFICE_DOCUMENTS.get(PurePath(name).suffix.lower())
    if office is not None:  # many are zip archives inside: named for what they are, not "no example files"
        raise InvalidInput(
            f"{shown(name)} is {office}, which I can't read. Save it as CSV with a question and an answer column "
            f"(or as text lines `question {ARROW} answer`) and send that."
        )
    if is_zip(data):
        documents = [
            d
            for d in read_zip(data, name, limit=limit, wanted=is_example_name)
            if not is_snapshot_manifest(d.name.removeprefix(f"{name}/"), d.data)
        ]
        if not documents:
            suffixes = ", ".join(sorted(EXAMPLE_SUFFIXES))
            raise InvalidInput(f"{shown(name)} has no example files ({suffixes}) in it.")
        return documents
    if name.lower().endswith(".zip"):
        raise InvalidInput(f"{shown(name)} is not a zip archive (it may be damaged or only partly sent).")
    return [Document(name, data)]


def read_examples(data: bytes, name: str, positive: bool, limit: int) -> list[Example]:
    """Every example of a file or upload, zip archives included; all of them or a UserError."""
    return [e for d in read_documents(data, name, limit) for e in parse_examples(d.data, d.name, positive)]


def parse_inline(text: str, positive: bool = True) -> list[Example]:
    """Examples typed after a command: `question => answer`, one a line."""
    return parse_examples(text, "your message", positive)


def example_files(directory: Path) -> list[Path]:
    """The files of a directory that hold examples (zips of them too), in a stable order."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in READABLE_SUFFIXES)
