"""Hostile input: whatever people send, they get a clear message and nothing is half-stored.

Paths, example files, zip archives (bombs among them), test JSON, audio, attachments that
lie about their size or type, and text longer than Discord allows. Property tests (hypothesis)
state the invariants; examples pin down each named case; the cases that cross the Discord
layer are driven through the loopback Discord. The audio file that decodes to hours is
tests/test_speech.py::test_a_file_that_decodes_to_hours_stops_at_the_limit.
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import CONFIGURED_OWNER, OWNER_ID
from tests.loopback_discord import FakeDiscord, payloads
from trainerbot.app import Services, build_services
from trainerbot.config import Settings, load_settings
from trainerbot.core.files import DataDirectory, FileService, Folders
from trainerbot.core.permissions import Access
from trainerbot.errors import InvalidInput, NotReady, TooLarge, UnsafePath, UserError
from trainerbot.learning import archives
from trainerbot.learning.archives import MAX_MEMBERS, MAX_RATIO, read_zip, shown
from trainerbot.learning.datasets import DIRECTORY_LIMIT_FILES
from trainerbot.learning.evaluation import parse_cases
from trainerbot.learning.examples import MAX_TEXT, parse_inline, read_examples
from trainerbot.speech.audio import decode
from trainerbot.storage.database import Database
from trainerbot.storage.knowledge import Knowledge
from trainerbot.types import GLOBAL_BASE, Caller, Upload

ADMIN = Caller(1, "admin", is_owner=True)  # the bot's owner outside a server (the console): the bot-wide base
LIMIT = 100_000  # the upload limit of these tests, as in tests/conftest.py
SECRET = b"secret => do not read me"
GOOD_LINES = b"when do you open => At 9\nwhere are you => Main street\n"
QUICK = hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- building hostile files --------------------------------------------------------------


def make_zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w", compression=method) as archive:
        warnings.simplefilter("ignore")  # duplicate names: hostile archives may well have them
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def zip_with_info(info: zipfile.ZipInfo, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(info, data)
    return out.getvalue()


def encrypted_zip() -> bytes:
    """A member flagged as encrypted, as `zip -e` makes (zipfile cannot write one: the flag bit is patched in)."""
    data = bytearray(make_zip([("faq.txt", GOOD_LINES)]))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local header, central directory
        at = data.find(signature) + offset
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | 0x1)
    return bytes(data)


def symlink_zip() -> bytes:
    """A member stored as a symbolic link, as `zip -y` makes: its bytes are the link's target."""
    info = zipfile.ZipInfo("faq.txt")
    info.external_attr = 0o120777 << 16
    return zip_with_info(info, b"/etc/passwd")


def nul_name_zip() -> bytes:
    """A member whose stored name hides a NUL (zipfile cuts names at NUL, so the bytes are patched)."""
    data = make_zip([("faq.txtX.exe", GOOD_LINES)])
    return data.replace(b"faq.txtX.exe", b"faq.txt\x00.exe")


def understated_zip(size: int) -> bytes:
    """A member of ``size`` zero bytes whose headers say it is 100 bytes: a header that lies."""
    data = bytearray(make_zip([("faq.txt", b"\0" * size)]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = data.find(signature)
        struct.pack_into("<I", data, at + offset, 100)
    return bytes(data)


def declared_entries_zip(count: int) -> bytes:
    """An empty archive whose end record claims ``count`` entries."""
    data = bytearray(make_zip([]))
    at = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, at + 8, min(count, 0xFFFF), min(count, 0xFFFF))
    return bytes(data)


def bomb_zip(size: int = 20_000_000) -> bytes:
    """A classic zip bomb: one member of ``size`` zeros, compressed about a thousand times."""
    return make_zip([("faq.txt", b"\0" * size)])


def wav(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes((np.sin(np.arange(int(rate * seconds)) / 10) * 8000).astype("<i2").tobytes())
    return out.getvalue()


GOOD_ZIP = make_zip([("faq.txt", GOOD_LINES), ("more/sky.csv", b"input,output\nwhat colour is the sky,Blue\n")])

# Each hostile archive with the words its refusal must contain.
HOSTILE_ARCHIVES = {
    "zip bomb": (bomb_zip(), f"more than {MAX_RATIO} times"),
    "nested by name": (make_zip([("inner.zip", GOOD_ZIP)]), "nested archives are not read"),
    "nested behind a text name": (make_zip([("inner.txt", GOOD_ZIP)]), "nested archives are not read"),
    "gzip behind a text name": (make_zip([("inner.txt", b"\x1f\x8b\x08" + bytes(40))]), "nested archives"),
    "dot-dot member": (make_zip([("../../evil.txt", GOOD_LINES)]), "has `..` in its name"),
    "absolute member": (make_zip([("/etc/cron.d/evil.txt", GOOD_LINES)]), "absolute path"),
    "drive-letter member": (make_zip([("C:/evil.txt", GOOD_LINES)]), "absolute path"),
    "backslash dot-dot member": (make_zip([("..\\evil.txt", GOOD_LINES)]), "has `..` in its name"),
    "fullwidth ．．／ member": (make_zip([("．．／evil.txt", GOOD_LINES)]), "has `..` in its name"),
    "division-slash member": (make_zip([("..∕evil.txt", GOOD_LINES)]), "has `..` in its name"),
    "NUL in a member name": (nul_name_zip(), "NUL character"),
    "very long member name": (make_zip([("a" * 300 + ".txt", GOOD_LINES)]), "the limit is 255"),
    "encrypted member": (encrypted_zip(), "is encrypted"),
    "symlink member": (symlink_zip(), "symbolic link"),
    "bzip2 member": (make_zip([("faq.txt", GOOD_LINES)], zipfile.ZIP_BZIP2), "only stored and deflated"),
    "lzma member": (make_zip([("faq.txt", GOOD_LINES)], zipfile.ZIP_LZMA), "only stored and deflated"),
    "too many entries": (make_zip([(f"f{i}.txt", b"") for i in range(MAX_MEMBERS + 1)]), "entries; the limit"),
    "65535 entries declared": (declared_entries_zip(0xFFFF), "entries; the limit"),
    "header understates the size": (understated_zip(200_000), "not a readable zip archive"),
    "cut short": (GOOD_ZIP[: len(GOOD_ZIP) // 2], "not a readable zip archive"),
    "no example files": (make_zip([("photo.png", b"\x89PNG")]), "has no example files"),
    "over the limit in total": (
        make_zip([(f"f{i}.txt", os.urandom(30_000).hex().encode()) for i in range(4)]),
        "the limit is",
    ),
}


# --- paths -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> DataDirectory:
    """A data directory with a secret beside it, links that leave, a link loop, and a look-alike folder."""
    base = tmp_path_factory.mktemp("paths")
    root = base / "data"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("a => b")
    (base / "secret.txt").write_bytes(SECRET)
    (root / "leak.txt").symlink_to(base / "secret.txt")
    (root / "up").symlink_to(base)
    (root / "loop").symlink_to(root / "loop")
    (root / "．．").mkdir()  # a real folder named with fullwidth dots: inside, but what it mimics is not
    return DataDirectory(root)


@pytest.fixture(scope="module")
def file_service(data_dir: DataDirectory) -> FileService:
    """`!getfile` of the bot-wide base, whose folder is ``data_dir``'s root (the database kept beside it)."""
    knowledge = Knowledge(Database(data_dir.root.parent / "db.sqlite3"))
    return FileService(Folders(data_dir.root), Access(knowledge, ["Trainer"]), upload_limit=LIMIT)


PATH_PARTS = st.sampled_from(
    ["..", ".", "", "notes", "a.txt", "leak.txt", "up", "loop", "secret.txt", "．．", "／", "∕", "\\", "..\\..",
     "\x00", "~", "%2e%2e", "\u202e", "\ud800", "a" * 300, "ｎｏｔｅｓ", "/etc/passwd", "C:"]
)  # fmt: skip
HOSTILE_PATHS = st.one_of(
    st.lists(PATH_PARTS, min_size=1, max_size=6).map("/".join),
    st.lists(PATH_PARTS, min_size=1, max_size=6).map("".join),
    st.text(max_size=40),
    st.text(min_size=1000, max_size=1100, alphabet="a/."),
)


@QUICK
@given(HOSTILE_PATHS)
def test_no_path_string_resolves_outside_the_root(data_dir: DataDirectory, text: str) -> None:
    root = data_dir.root.resolve()
    try:
        path = data_dir.resolve(text)
    except UnsafePath as exc:
        assert str(exc) and len(str(exc)) < 1500
        return
    assert path == root or root in path.parents
    assert isinstance(path.is_file(), bool) and isinstance(path.is_dir(), bool)  # what commands do next


def test_a_folder_with_links_that_leave_or_loop_is_listed_without_them(file_service: FileService) -> None:
    """`!getfile .` lists the folder's files (issue 13): the link loop and the links that leave are no files of it."""
    with pytest.raises(UserError) as listed:
        file_service.getfile(ADMIN, ".")
    assert str(listed.value).startswith("`.` is a directory. Name one of its 1 files: `notes/a.txt`"), listed.value
    with pytest.raises(UserError) as missing:
        file_service.getfile(ADMIN, "nothing.txt")
    assert "At its top:" in str(missing.value) and "loop" not in str(missing.value) and "up" not in str(missing.value)


@QUICK
@given(HOSTILE_PATHS)
def test_getfile_sends_nothing_from_outside_whatever_the_path(file_service: FileService, text: str) -> None:
    try:
        reply = file_service.getfile(ADMIN, text)
    except UserError as exc:
        assert len(str(exc)) < 1500
        return
    assert all(SECRET not in f.data for f in reply.files)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../secret.txt", "outside the data directory"),
        ("/etc/passwd", "outside the data directory"),
        ("leak.txt", "outside the data directory"),
        ("up/secret.txt", "outside the data directory"),
        ("loop", "cannot be resolved"),
        ("notes/a\x00.txt", "NUL character"),
        ("notes/\ud800.txt", "lone surrogates"),
        ("a" * 300, "300 bytes long; the limit is 255"),
        ("é" * 200, "400 bytes long"),
        ("a/" * 600, "the limit is 1024"),
        ("．．／secret.txt", "outside the data directory"),  # fullwidth ．．／
        ("..∕secret.txt", "outside the data directory"),  # U+2215 division slash
        ("..⁄secret.txt", "outside the data directory"),  # U+2044 fraction slash
        ("..\\secret.txt", "outside the data directory"),
    ],
)
def test_each_named_path_attack_gets_a_clear_refusal(data_dir: DataDirectory, path: str, message: str) -> None:
    with pytest.raises(UnsafePath, match=message):
        data_dir.resolve(path)


def test_look_alikes_are_judged_by_what_they_mimic(data_dir: DataDirectory) -> None:
    root = data_dir.root.resolve()
    assert (root / "．．").is_dir()
    with pytest.raises(UnsafePath):  # a real folder of that name, but it looks like the way out
        data_dir.resolve("．．")
    assert data_dir.resolve("notes∕a.txt") == root / "notes∕a.txt"  # mimics notes/a.txt: inside, allowed
    assert data_dir.resolve("ｎｏｔｅｓ/a.txt") == root / "ｎｏｔｅｓ" / "a.txt"


# --- example files -----------------------------------------------------------------------


def check_examples_or_refusal(data: bytes, name: str) -> None:
    """The invariant of every example reader: good examples, or a UserError that begins with the file's name."""
    try:
        examples = read_examples(data, name, True, LIMIT)
    except (InvalidInput, TooLarge) as exc:
        assert str(exc).startswith(shown(name)), str(exc)
    else:
        assert examples
        for example in examples:
            for text in (example.input, example.output):
                assert text == text.strip() and 0 < len(text) <= MAX_TEXT and "\x00" not in text


EXAMPLE_NAMES = st.sampled_from(["f.json", "f.jsonl", "f.csv", "f.tsv", "f.txt", "f", "f.zip", "F.CSV"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["input", "output", "data", "x"]), inner)
    ),
    max_leaves=12,
)


@QUICK
@given(st.binary(max_size=400), EXAMPLE_NAMES)
def test_any_bytes_are_examples_or_a_refusal_naming_the_file(data: bytes, name: str) -> None:
    check_examples_or_refusal(data, name)


@QUICK
@given(JSON_VALUES, st.sampled_from(["f.json", "f.jsonl"]))
def test_any_json_is_examples_or_a_refusal_naming_the_file(value: object, name: str) -> None:
    check_examples_or_refusal(json.dumps(value).encode(), name)


@QUICK
@given(st.lists(st.lists(st.text(max_size=12), max_size=4), max_size=6), st.sampled_from(["f.csv", "f.tsv"]))
def test_any_table_is_examples_or_a_refusal_naming_the_file(rows: list[list[str]], name: str) -> None:
    delimiter = "\t" if name.endswith(".tsv") else ","
    lines = [delimiter.join(["input", "output"]), *(delimiter.join(row) for row in rows)]
    check_examples_or_refusal("\n".join(lines).encode(), name)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("deep.json", b"[" * 100_000, "deep.json: the JSON is nested too deeply"),
        ("deep.jsonl", b'{"input": ' + b"[" * 100_000, "deep.jsonl, line 1: the JSON is nested too deeply"),
        ("faq.csv", b"\x89PNG\r\n\x1a\n" + bytes(50), "faq.csv is a PNG image, not a text file"),
        ("faq.txt", b"SQLite format 3\x00" + bytes(50), "faq.txt is an SQLite database, not a text file"),
        ("faq.txt", "a => b\ncafé => c\n".encode("latin-1"), "faq.txt, line 2: not UTF-8 text"),
        ("faq.txt", "a => b\n".encode("utf-16"), "faq.txt, line 1: not UTF-8 text"),
        ("faq.zip", GOOD_LINES, "faq.zip is not a zip archive"),
        ("faq.txt", b"a => " + b"b" * 2001, "faq.txt, line 1: output is 2001 characters long"),
        ("faq.txt", b"a" * 50_000 + b" => b", "faq.txt, line 1: input is 50000 characters long"),
    ],
)
def test_each_named_bad_file_gets_a_clear_refusal(name: str, data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        read_examples(data, name, True, LIMIT)
    assert str(refused.value).startswith(message)


def test_typed_lone_surrogates_are_refused_before_the_database_sees_them() -> None:
    with pytest.raises(InvalidInput, match="your message, line 1: input contains a lone surrogate"):
        parse_inline("a\ud800 => b")


# --- archives ----------------------------------------------------------------------------


def test_a_zip_of_example_files_is_read_by_content_whatever_its_name() -> None:
    for name in ("faq.zip", "faq.csv", "faq"):  # a zip named .csv is still a zip
        examples = read_examples(GOOD_ZIP, name, True, LIMIT)
        assert [e.output for e in examples] == ["At 9", "Main street", "Blue"]


@pytest.mark.parametrize("case", list(HOSTILE_ARCHIVES))
def test_each_hostile_archive_is_refused_whole_with_its_reason(case: str) -> None:
    data, reason = HOSTILE_ARCHIVES[case]
    with pytest.raises((InvalidInput, TooLarge)) as refused:
        read_examples(data, "pack.zip", True, LIMIT)
    assert str(refused.value).startswith("pack.zip") and reason in str(refused.value), str(refused.value)


def test_a_bomb_is_refused_from_its_headers_before_it_is_unpacked() -> None:
    bomb = bomb_zip()  # 20 MB of zeros in about 20 KB
    assert len(bomb) < 30_000
    with pytest.raises(TooLarge, match=r"claims to expand 1\d\d\d times; more than 100 times is refused"):
        read_zip(bomb, "bomb.zip", limit=10_000_000, wanted=lambda name: True)


def test_members_are_counted_as_they_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the header checks out of the way, the count made while reading still stops a member at the limit."""
    monkeypatch.setattr(archives, "_check_readable", lambda member, label: None)
    monkeypatch.setattr(archives, "_check_declared", lambda members, label, limit: None)
    big = make_zip([("faq.txt", b"a => b\n" * 30_000)])  # 210 KB, compressed about 500 times
    with pytest.raises(TooLarge, match="expands more than 100 times"):
        read_zip(big, "big.zip", limit=10_000_000, wanted=lambda name: True)
    with pytest.raises(TooLarge, match="unpacks to more than 50,000 bytes"):
        read_zip(
            make_zip([("a.txt", os.urandom(30_000)), ("b.txt", os.urandom(30_000))]),
            "big.zip",
            limit=50_000,
            wanted=lambda name: True,
        )


MEMBER_NAMES = st.sampled_from(
    ["faq.txt", "sub/faq.csv", "../x.txt", "/abs.txt", "．．／x.txt", "a\\..\\x.txt", "in.zip", "x.tar.gz",
     "note.pdf", "dir/", "d/e/f.jsonl", "ok.json", "C:/x.txt", "x" * 260 + ".txt"]
)  # fmt: skip
MEMBER_DATA = st.one_of(
    st.just(GOOD_LINES),
    st.just(b"input,output\nq,r\n"),
    st.just(GOOD_ZIP),
    st.just(b"\0" * 300_000),
    st.just(b'[{"input": "a", "output": "b"}]'),
    st.binary(max_size=200),
)


@QUICK
@given(st.lists(st.tuples(MEMBER_NAMES, MEMBER_DATA), max_size=5), st.sampled_from([8, 12, 14, 0]))
def test_any_archive_is_examples_or_refused_whole(members: list[tuple[str, bytes]], method: int) -> None:
    try:
        data = make_zip(members, method)
    except (ValueError, NotImplementedError):  # zipfile cannot write some of these itself
        assume(False)
    check_examples_or_refusal(data, "pack.zip")


@QUICK
@given(st.data())
def test_damaged_archives_are_refused_cleanly(draw: st.DataObject) -> None:
    data = bytearray(GOOD_ZIP)
    for _ in range(draw.draw(st.integers(1, 6))):
        at = draw.draw(st.integers(0, len(data) - 1))
        data[at] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(data)))
    check_examples_or_refusal(bytes(data[:cut] if draw.draw(st.booleans()) else data), "pack.zip")


# --- test JSON ---------------------------------------------------------------------------


@QUICK
@given(st.one_of(JSON_VALUES.map(json.dumps), st.text(max_size=60)).map(str.encode) | st.binary(max_size=100))
def test_any_test_json_is_cases_or_a_refusal_naming_the_file(data: bytes) -> None:
    try:
        cases = parse_cases(data, "cases.json")
    except InvalidInput as exc:
        assert str(exc).startswith("cases.json")
    else:
        assert cases and all(0 < len(c.input) <= MAX_TEXT for c in cases)
        assert all(c.output is None or len(c.output) <= MAX_TEXT for c in cases)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (GOOD_ZIP, "cases.json is a zip archive, not a text file"),
        (json.dumps([{"input": "a", "output": "b" * 2001}]).encode(), "at most 2000 characters"),
        (b'[{"input": "a\\ud800", "output": "b"}]', "lone surrogate"),
        (b'[{"input": 3}]', '"input" must be non-empty text'),
    ],
)
def test_each_named_bad_test_file_gets_a_clear_refusal(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_cases(data, "cases.json")


# --- audio -------------------------------------------------------------------------------

SHORT_WAV = wav(0.5)


@hypothesis_settings(max_examples=40, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda tail: SHORT_WAV[:44] + tail)))
def test_any_bytes_as_audio_decode_within_the_limit_or_are_refused(data: bytes) -> None:
    try:
        audio = decode(data, "voice.ogg", max_seconds=2)
    except (InvalidInput, TooLarge) as exc:
        assert str(exc).startswith("voice.ogg")
    else:
        assert 0 < audio.seconds <= 2.1


def test_audio_is_recognised_by_its_bytes_not_its_name() -> None:
    assert decode(SHORT_WAV, "notes.txt", max_seconds=5).seconds == pytest.approx(0.5, abs=0.01)
    with pytest.raises(InvalidInput, match=r"voice\.ogg could not be read as audio"):
        decode(GOOD_LINES * 20, "voice.ogg", max_seconds=5)
    with pytest.raises(TooLarge, match="longer than 3 seconds"):
        decode(wav(4.0, rate=8000), "short-header.wav", max_seconds=3)


# --- the teaching service: refused means nothing stored ------------------------------------


def light_settings(data_dir: Path) -> Settings:
    return load_settings(
        _env_file=None,
        data_dir=data_dir,
        owner_ids=[OWNER_ID],
        admin_roles=["Trainer"],
        upload_limit_bytes=LIMIT,
        chat_engine="none",
        stt_engine="none",
        tts_engine="none",
    )


@pytest.fixture(scope="module")
def teaching_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    built = build_services(light_settings(tmp_path_factory.mktemp("teach") / "data"), chat=False)
    yield built
    built.close()


def stored(services: Services) -> tuple[int, ...]:
    """Everything a refused command must leave as it was: rows, snapshots and partial files."""
    db = services.store.db
    counts = tuple(
        db.query_one(f"SELECT count(*) AS n FROM {table}")["n"] for table in ("examples", "jobs", "datasets")
    )
    files = sum(1 for p in services.settings.data_dir.rglob("*") if p.suffix in (".zip", ".partial"))
    return (*counts, files)


BAD_UPLOADS = st.one_of(
    st.sampled_from([data for data, _ in HOSTILE_ARCHIVES.values()]).map(lambda data: Upload("pack.zip", data, 100)),
    st.just(Upload("big.txt", GOOD_LINES * 3000, 10)),  # bigger than it declared, and over the limit
    st.just(Upload("faq.txt", b"a => b\nno arrow\n", 16)),
    st.just(Upload("faq.csv", "input,output\ncafé,x\n".encode("latin-1"), 20)),
    st.just(Upload("faq.json", b"[" * 50_000, 50_000)),
)
GOOD_UPLOADS = st.sampled_from([Upload("a.txt", GOOD_LINES, len(GOOD_LINES)), Upload("b.zip", GOOD_ZIP, 1)])


@hypothesis_settings(max_examples=40, deadline=None)
@given(st.lists(GOOD_UPLOADS, max_size=2), BAD_UPLOADS, st.integers(0, 2), st.sampled_from(["", "a => b"]))
def test_train_with_any_bad_upload_stores_nothing(
    teaching_services: Services, good: list[Upload], bad: Upload, at: int, text: str
) -> None:
    before = stored(teaching_services)
    uploads = [*good[:at], bad, *good[at:]]
    with pytest.raises(UserError):
        teaching_services.teaching.train(ADMIN, text, uploads)
    assert stored(teaching_services) == before


def dataset_folder(services: Services, name: str) -> Path:
    """A new folder under the data directory's datasets/, where `!select_dataset datasets/<name>` finds it."""
    folder = services.settings.data_dir / "datasets" / name
    folder.mkdir(parents=True)
    return folder


def test_train_and_select_dataset_refuse_hostile_files_in_the_data_directory(teaching_services: Services) -> None:
    teaching = teaching_services.teaching
    folder = dataset_folder(teaching_services, "shop")
    (folder / "faq.txt").write_bytes(GOOD_LINES)
    (folder / "bomb.zip").write_bytes(bomb_zip())
    before = stored(teaching_services)
    for call in (
        lambda: teaching.train(ADMIN, "datasets/shop", []),
        lambda: teaching.train(ADMIN, "datasets/shop/bomb.zip", []),
        lambda: teaching.select_dataset(ADMIN, "datasets/shop"),
        lambda: teaching.train(ADMIN, "x" * 3000, []),
        lambda: teaching.train(ADMIN, "../../etc/passwd", []),
    ):
        with pytest.raises(UserError) as refused:
            call()
        assert len(str(refused.value)) < 2000
    assert stored(teaching_services) == before
    (folder / "bomb.zip").unlink()


def test_select_dataset_reads_zips_and_snapshots_them_as_plain_files(teaching_services: Services) -> None:
    """A zip in a dataset is unpacked into the snapshot, so the snapshot can be taught from, and is skipped after."""
    teaching = teaching_services.teaching
    root = teaching_services.settings.data_dir
    folder = dataset_folder(teaching_services, "zipped")
    (folder / "pack.zip").write_bytes(GOOD_ZIP)
    (folder / "extra.txt").write_bytes(b"do you deliver => Yes\n")
    reply = teaching.select_dataset(ADMIN, "datasets/zipped")
    assert "4 positive examples, 4 answers, from 2 files" in reply.text
    [snapshot] = (root / "datasets").glob("zipped-*.zip")
    assert sorted(zipfile.ZipFile(snapshot).namelist()) == [
        "extra.txt",
        "manifest.json",
        "pack.zip/faq.txt",
        "pack.zip/more/sky.csv",
    ]
    # The snapshot read back (its manifest left out) gives the same examples; a scan of
    # datasets/ leaves the bot's own snapshots out, or they would be counted twice.
    assert len(read_examples(snapshot.read_bytes(), snapshot.name, True, LIMIT)) == 4
    assert snapshot not in teaching_services.teaching.folders.of(GLOBAL_BASE).example_files(root / "datasets")


def test_a_directory_over_ten_files_worth_is_refused_before_anything_is_stored(teaching_services: Services) -> None:
    """Each file under the limit, but together (zips unpacked) more than a directory may hold in memory."""
    teaching = teaching_services.teaching
    limit = teaching.upload_limit
    folder = dataset_folder(teaching_services, "huge")
    page = b"".join(f"question number {n:06} => answer {n:06}\n".encode() for n in range(limit // 41))
    assert limit * 0.95 < len(page) <= limit  # just under the limit on one file
    for n in range(DIRECTORY_LIMIT_FILES):
        (folder / f"part{n}.txt").write_bytes(page)
    half = page.index(b"\n", len(page) // 2) + 1
    packed = make_zip([("a.txt", page[:half]), ("b.txt", page[half:])])
    assert len(packed) < limit // 2  # small, but counted as the file's worth it unpacks to
    (folder / "both.zip").write_bytes(packed)
    before = stored(teaching_services)
    for call in (
        lambda: teaching.select_dataset(ADMIN, "datasets/huge"),
        lambda: teaching.train(ADMIN, "datasets/huge", []),
    ):
        with pytest.raises(TooLarge, match=r"holds more than .* of examples"):
            call()
    assert stored(teaching_services) == before
    (folder / "both.zip").unlink()  # ten files' worth is fine
    assert "Dataset `huge` selected" in teaching.select_dataset(ADMIN, "datasets/huge").text


def test_numbers_too_big_for_an_id_are_just_unknown_ids(teaching_services: Services) -> None:
    with pytest.raises(NotReady, match="There is no job #1000"):
        teaching_services.teaching.job_status(GLOBAL_BASE, 10**40)
    with pytest.raises(NotReady, match="can't find a reply of mine"):
        teaching_services.teaching.correct(ADMIN, 10**40, "the right answer")
    with pytest.raises(InvalidInput, match="2000 characters"):
        teaching_services.teaching.correct(ADMIN, 1, "x" * 2001)


# --- through the loopback Discord ----------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The conftest's settings without the speech models: nothing here is heard or said."""
    return light_settings(tmp_path / "data")


async def say(server: FakeDiscord, content: str, *, author=None, attachments=None, reply_to=None) -> dict:
    sent = await server.send_message(content, author=author, attachments=attachments or [], reply_to=reply_to)
    [reply, *_] = await server.wait_for_bot_messages(after=sent["id"], timeout=15)
    return reply


def every_message_fits(server: FakeDiscord) -> None:
    bodies = [body for bodies in server.message_bodies.values() for body in bodies]
    assert bodies and all(len(body.get("content") or "") <= 2000 for body in bodies)


@pytest.mark.usefixtures("bot")
async def test_long_commands_get_replies_that_fit_in_a_message(discord_server: FakeDiscord, services: Services) -> None:
    """Discord lets Nitro users send 4000 characters; every reply stays within the 2000 a bot may send."""
    for text, expected in (
        ("!" + "x" * 3990, "I don't know `!xxxx"),
        ("!help " + "y" * 3990, "There is no command"),
        ("!train " + "words without an arrow " * 170, "is neither `question => answer` nor a file"),
        ("!getfile " + "a/" * 700, "the limit is 1024"),
        ("!getfile " + "．．／" * 5 + "etc/passwd", "outside this server's folder"),
        ("!select_dataset " + "z" * 500, "500 bytes long; the limit is 255"),
        ("!feedback " + "f" * 3990, "at most 2000 characters"),
        ("!job " + "9" * 3000, "There is no job #9999"),
    ):
        reply = await say(discord_server, text, author=CONFIGURED_OWNER)
        assert expected in reply["content"], (text[:30], reply["content"][:200])
    every_message_fits(discord_server)
    assert stored(services) == (0, 0, 0, 0)
    assert services.store.db.query_one("SELECT count(*) AS n FROM feedback")["n"] == 0


@pytest.mark.usefixtures("bot")
async def test_a_4000_character_message_is_answered_and_stored_as_sent(
    discord_server: FakeDiscord, services: Services
) -> None:
    text = ("A long message about nothing in particular. " * 100)[:4000]
    reply = await say(discord_server, text)
    assert "haven't learned that yet" in reply["content"]
    answer = await say(discord_server, "!correct " + "c" * 2500, reply_to=reply["id"])
    assert "must fit in one message (2000 characters)" in answer["content"]
    every_message_fits(discord_server)
    [turn] = services.store.db.query("SELECT content FROM chat_turns WHERE role = 'user'")
    assert turn["content"] == text  # Discord's own limit bounds it: 4000 characters at most
    assert services.store.db.query_one("SELECT count(*) AS n FROM corrections")["n"] == 0


@pytest.mark.usefixtures("bot")
async def test_lone_surrogates_in_messages_and_feedback_are_stored_as_replacement_characters(
    discord_server: FakeDiscord, services: Services
) -> None:
    """JSON can carry a lone surrogate (\\ud800) that UTF-8 and SQLite cannot: the message is still answered."""
    reply = await say(discord_server, "broken \ud800 text")
    assert "haven't learned that yet" in reply["content"]
    thanks = await say(discord_server, "!feedback odd \udfff char")
    assert thanks["content"].startswith("Thank you for the feedback")
    [turn] = services.store.db.query("SELECT content FROM chat_turns WHERE role = 'user'")
    assert turn["content"] == "broken \ufffd text"
    [feedback] = services.store.db.query("SELECT text FROM feedback")
    assert feedback["text"] == "odd \ufffd char"


@pytest.fixture
def lying_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attachment the loopback Discord announces claims to be 10 bytes, whatever it holds."""
    real = payloads.attachment_payload

    def lying(*args, **kwargs) -> dict:
        return {**real(*args, **kwargs), "size": 10}

    monkeypatch.setattr(payloads, "attachment_payload", lying)


@pytest.mark.usefixtures("bot", "lying_sizes")
async def test_attachments_that_lie_about_their_size_are_stopped_at_the_limit(
    discord_server: FakeDiscord, services: Services
) -> None:
    big = GOOD_LINES * 2000  # 108 KB, over the 100 KB limit, announced as 10 bytes
    reply = await say(discord_server, "!train", author=CONFIGURED_OWNER, attachments=[("faq.txt", big)])
    assert reply["content"].startswith("faq.txt is larger than it said it was, and over the limit of 100.0 KB")
    reply = await say(discord_server, "", attachments=[("voice.ogg", b"OggS" + bytes(LIMIT + 10))])
    assert reply["content"].startswith("voice.ogg is larger than it said it was")
    small = await say(discord_server, "!train", author=CONFIGURED_OWNER, attachments=[("faq.txt", GOOD_LINES)])
    assert "Stored 2 positive examples from faq.txt" in small["content"]  # a harmless lie changes nothing
    assert services.store.knowledge.example_counts(discord_server.guild_id)["total"] == 2


@pytest.mark.usefixtures("bot")
async def test_archives_through_discord_bombs_refused_zips_by_content_accepted(
    discord_server: FakeDiscord, services: Services
) -> None:
    owner = CONFIGURED_OWNER
    for name, data, expected in (
        ("bomb.zip", bomb_zip(), "possible zip bomb"),
        ("nested.zip", HOSTILE_ARCHIVES["nested by name"][0], "nested archives are not read"),
        ("evil.zip", HOSTILE_ARCHIVES["dot-dot member"][0], "has `..` in its name"),
        ("photo.csv", b"\x89PNG\r\n\x1a\n" + bytes(100), "photo.csv is a PNG image, not a text file"),
    ):
        reply = await say(discord_server, "!train", author=owner, attachments=[(name, data)])
        assert expected in reply["content"], reply["content"]
    reply = await say(discord_server, "!test", attachments=[("cases.json", GOOD_ZIP)])
    assert reply["content"] == "cases.json is a zip archive, not a text file."
    assert stored(services) == (0, 0, 0, 0)
    # A zip that calls itself .csv is still read as what it is; !archive's zips come back the same way.
    started = await say(discord_server, "!train", author=owner, attachments=[("faq.csv", GOOD_ZIP)])
    assert "Stored 3 positive examples from faq.csv" in started["content"]
    folder = services.settings.data_dir / "servers" / str(discord_server.guild_id) / "faq"  # the guild's folder
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"do you deliver => Yes\n")
    (folder / "sub" / "b.jsonl").write_bytes(b'{"input": "can I pay by card", "output": "Yes, any card"}\n')
    archived = await say(discord_server, "!archive faq", author=owner)
    zip_path = archived["content"].split("into `")[1].split("`")[0]
    again = await say(discord_server, f"!train {zip_path}", author=owner)
    assert f"Stored 2 positive examples from {zip_path}" in again["content"]
    assert services.store.knowledge.example_counts(discord_server.guild_id)["total"] == 5
    every_message_fits(discord_server)
