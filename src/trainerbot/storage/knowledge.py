"""What each knowledge base knows: its examples, datasets, embeddings, model versions and settings.

Every call names its base (a server's id, or ``GLOBAL_BASE``): a query without one cannot be
written by accident, and nothing here reads or changes another base's rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from trainerbot.storage.audit import Change, note
from trainerbot.storage.database import Database, utc_now
from trainerbot.types import BaseSettings, Example, IndexedExample, ModelVersion, StoredExample

# An admin put these examples in: `!train` or `!answer` (admins only), or a selected dataset.
APPROVED = "(source LIKE 'train:%' OR source LIKE 'review:%' OR dataset_id IS NOT NULL)"
# The examples a base uses: those taught one by one, and those of its selected dataset.
IN_USE = "(dataset_id IS NULL OR dataset_id IS (SELECT selected_dataset FROM bases WHERE id = ?1))"


def model_version(row: Any) -> ModelVersion:
    columns = set(row.keys())  # a Row's ``in`` looks at its values, not its column names
    return ModelVersion(**{key: row[key] for key in ModelVersion.__dataclass_fields__ if key in columns})


def _matching(base: int, search: str) -> tuple[str, tuple[Any, ...]]:
    """The condition for a base's examples in use whose question or answer holds ``search`` (any case).

    ``instr`` rather than LIKE: nothing in what people type is a wildcard, and ``casefold`` (registered by
    ``Database``) folds every language's letters, where LIKE folds ASCII only.
    """
    if not search:
        return f"base = ?1 AND {IN_USE}", (base,)
    return (
        f"base = ?1 AND {IN_USE} AND (instr(casefold(input), ?2) > 0 OR instr(casefold(output), ?2) > 0)",
        (base, search.casefold()),
    )


def _stored(row: Any) -> StoredExample:
    return StoredExample(
        id=row["id"],
        question=row["input"],
        answer=row["output"],
        positive=bool(row["positive"]),
        source=row["source"],
        author_id=row["author_id"],
        created_at=row["created_at"],
        from_dataset=row["dataset_id"] is not None,
    )


def ensure_base(db: Any, base: int) -> None:
    """Every base has its row before anything of it is stored (defaults: see ``BaseSettings``)."""
    db.execute("INSERT INTO bases (id, changed_at) VALUES (?, ?) ON CONFLICT DO NOTHING", (base, utc_now()))


class Knowledge:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- examples and datasets -------------------------------------------------------------------

    def add_examples(
        self,
        base: int,
        examples: Iterable[Example],
        *,
        source: str,
        author_id: int | None,
        dataset_id: int | None = None,
        change: Change | None = None,
    ) -> list[int]:
        now = utc_now()
        with self.db.transaction() as db:
            ensure_base(db, base)
            ids = [
                db.execute(
                    "INSERT INTO examples (base, input, output, positive, source, dataset_id, author_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (base, ex.input, ex.output, int(ex.positive), source, dataset_id, author_id, now),
                ).fetchone()[0]
                for ex in examples
            ]
            note(db, base, change)
            return ids

    def already_taught(self, base: int, examples: Iterable[Example]) -> set[Example]:
        """Which of ``examples`` the base holds already, taught (not from a dataset) with the same meaning."""
        questions = sorted({ex.input for ex in examples})
        found: set[Example] = set()
        for start in range(0, len(questions), 500):  # within SQLite's bound-parameter limit
            chunk = questions[start : start + 500]
            rows = self.db.query(
                f"SELECT input, output, positive FROM examples WHERE base = ? AND dataset_id IS NULL"
                f" AND input IN ({', '.join('?' * len(chunk))})",
                (base, *chunk),
            )
            found.update(Example(row["input"], row["output"], bool(row["positive"])) for row in rows)
        return found

    def add_dataset(
        self,
        base: int,
        *,
        name: str,
        directory: str,
        positive: bool,
        examples: Sequence[Example],
        files: int,
        archive: str,
        manifest: dict[str, str],
        created_by: int | None,
        change: Change | None = None,
    ) -> int:
        """Stores a dataset and its examples in one transaction, and makes it the base's selected one."""
        now = utc_now()
        with self.db.transaction() as db:
            ensure_base(db, base)
            dataset_id = db.execute(
                "INSERT INTO datasets (base, name, directory, positive, files, examples, outputs, archive, manifest,"
                " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    base,
                    name,
                    directory,
                    int(positive),
                    files,
                    len(examples),
                    len({ex.output for ex in examples}),
                    archive,
                    json.dumps(manifest),
                    created_by,
                    now,
                ),
            ).fetchone()[0]
            db.executemany(
                "INSERT INTO examples (base, input, output, positive, source, dataset_id, author_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (base, ex.input, ex.output, int(ex.positive), f"dataset:{name}", dataset_id, created_by, now)
                    for ex in examples
                ],
            )
            # The revision counts up: the examples of the dataset selected before leave (see ``serving_state``).
            db.execute(
                "UPDATE bases SET selected_dataset = ?, revision = revision + 1 WHERE id = ?", (dataset_id, base)
            )
            note(db, base, change)
            return dataset_id

    def selected_dataset_id(self, base: int) -> int | None:
        row = self.db.query_one("SELECT selected_dataset FROM bases WHERE id = ?", (base,))
        return row["selected_dataset"] if row else None

    def training_rows(self, base: int, max_example_id: int, dataset_id: int | None) -> list[tuple[int, Example]]:
        """What a job trains on, with the examples' ids: everything taught up to its start, plus its dataset."""
        rows = self.db.query(
            "SELECT id, input, output, positive FROM examples WHERE base = ? AND id <= ?"
            " AND (dataset_id IS NULL OR dataset_id IS ?) ORDER BY id",
            (base, max_example_id, dataset_id),
        )
        return [(r["id"], Example(r["input"], r["output"], bool(r["positive"]))) for r in rows]

    def example_counts(self, base: int) -> dict[str, int]:
        row = self.db.query_one(
            "SELECT count(*) AS total, coalesce(sum(positive), 0) AS positive,"
            f" count(DISTINCT output) AS outputs FROM examples WHERE base = ?1 AND {IN_USE}",
            (base,),
        )
        assert row is not None
        return {"total": row["total"], "positive": row["positive"], "outputs": row["outputs"]}

    def teaches(self, base: int) -> bool:
        """Whether a base has a positive example in use (one indexed probe: asked of every unanswered message)."""
        row = self.db.query_one(
            f"SELECT EXISTS (SELECT 1 FROM examples WHERE base = ?1 AND positive = 1 AND {IN_USE}) AS taught", (base,)
        )
        return bool(row and row["taught"])

    def taught_outputs(self, base: int) -> list[str]:
        """The answers a base gives: the outputs of its positive examples in use, each once."""
        rows = self.db.query(
            f"SELECT DISTINCT output FROM examples WHERE base = ?1 AND positive = 1 AND {IN_USE} ORDER BY output",
            (base,),
        )
        return [row["output"] for row in rows]

    def taught_pairs(self, base: int) -> list[tuple[str, str]]:
        """Every (question, answer) of the positive examples a base uses."""
        rows = self.db.query(
            f"SELECT input, output FROM examples WHERE base = ?1 AND positive = 1 AND {IN_USE}", (base,)
        )
        return [(row["input"], row["output"]) for row in rows]

    def stored(self, base: int) -> tuple[int, int]:
        """How many examples a base holds (every dataset counted) and their bytes of text."""
        row = self.db.query_one(
            "SELECT count(*) AS n, coalesce(sum(length(CAST(input AS BLOB)) + length(CAST(output AS BLOB))), 0)"
            " AS bytes FROM examples WHERE base = ?",
            (base,),
        )
        assert row is not None
        return int(row["n"]), int(row["bytes"])

    # --- example embeddings, for retrieval into chat prompts -------------------------------------

    def save_example_vectors(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """Stores embeddings; one whose example was deleted meanwhile (`!forget me`) is left out."""
        with self.db.transaction() as db:
            db.executemany(
                "INSERT INTO example_vectors SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM examples WHERE id = ?1)"
                " ON CONFLICT (example_id) DO UPDATE SET vector = excluded.vector",
                rows,
            )

    def retrievable_state(self, base: int) -> tuple[int, int, int | None, int]:
        """Changes whenever the positive examples a base uses change: (largest id, count, selected dataset,
        revision). Edits are new rows, so the first two see them; the revision is there for any that is not."""
        row = self.db.query_one(
            "SELECT coalesce(max(id), 0) AS top, count(*) AS n,"
            " (SELECT selected_dataset FROM bases WHERE id = ?1) AS dataset,"
            " (SELECT revision FROM bases WHERE id = ?1) AS revision"
            f" FROM examples WHERE base = ?1 AND positive = 1 AND {IN_USE}",
            (base,),
        )
        assert row is not None
        return int(row["top"]), int(row["n"]), row["dataset"], int(row["revision"] or 0)

    def retrievable_examples(self, base: int) -> list[IndexedExample]:
        """The positive examples a base uses (taught ones and its selected dataset), with stored embeddings."""
        rows = self.db.query(
            "SELECT e.id, e.input, e.output, v.vector FROM examples e LEFT JOIN example_vectors v"
            " ON v.example_id = e.id WHERE e.base = ?1 AND e.positive = 1 AND (e.dataset_id IS NULL OR"
            " e.dataset_id IS (SELECT selected_dataset FROM bases WHERE id = ?1)) ORDER BY e.id",
            (base,),
        )
        return [IndexedExample(r["id"], r["input"], r["output"], r["vector"]) for r in rows]

    # --- what was taught since a base's model was trained ------------------------------------------

    def fresh_state(self, base: int, after: int) -> tuple[int, int]:
        """Changes whenever the examples a base uses past example ``after`` change: (count, largest id).

        An index range over the newest examples only: cheap enough to ask before every answer.
        """
        row = self.db.query_one(
            f"SELECT count(*) AS n, coalesce(max(id), 0) AS top FROM examples WHERE base = ?1 AND id > ?2 AND {IN_USE}",
            (base, after),
        )
        assert row is not None
        return int(row["n"]), int(row["top"])

    def fresh_examples(self, base: int, after: int, limit: int) -> list[tuple[IndexedExample, bool]]:
        """The ``limit`` newest examples a base uses past example ``after``, oldest first, each with its polarity."""
        rows = self.db.query(
            "SELECT * FROM (SELECT e.id, e.input, e.output, e.positive, v.vector FROM examples e"
            " LEFT JOIN example_vectors v ON v.example_id = e.id"
            " WHERE e.base = ?1 AND e.id > ?2 AND (e.dataset_id IS NULL"
            " OR e.dataset_id IS (SELECT selected_dataset FROM bases WHERE id = ?1))"
            " ORDER BY e.id DESC LIMIT ?3) ORDER BY id",
            (base, after, limit),
        )
        return [(IndexedExample(r["id"], r["input"], r["output"], r["vector"]), bool(r["positive"])) for r in rows]

    def serving_state(self, base: int, after: int) -> tuple[int, int, int]:
        """``fresh_state`` and the base's revision, in one read: what the serving layer checks before each answer.

        Deleting an example the model was trained on changes neither the model nor what came after it;
        the revision, counted up by every edit, deletion and dataset selected, tells the serving layer to look
        again.
        """
        row = self.db.query_one(
            "SELECT count(*) AS n, coalesce(max(id), 0) AS top, (SELECT revision FROM bases WHERE id = ?1) AS revision"
            f" FROM examples WHERE base = ?1 AND id > ?2 AND {IN_USE}",
            (base, after),
        )
        assert row is not None
        return int(row["n"]), int(row["top"]), int(row["revision"] or 0)

    # --- what a base knows, answer by answer: the dashboard reads and edits it ---------------------

    def answer_totals(self, base: int, search: str = "") -> tuple[int, int]:
        """How many answers and examples a base uses (those matching ``search``, when given)."""
        where, params = _matching(base, search)
        row = self.db.query_one(
            f"SELECT count(DISTINCT output) AS answers, count(*) AS n FROM examples WHERE {where}", params
        )
        assert row is not None
        return int(row["answers"]), int(row["n"])

    def answer_groups(self, base: int, search: str, limit: int, offset: int) -> list[tuple[str, int, int, int]]:
        """One page of a base's answers in alphabetical order: (answer, examples, positive ones and ones of the
        selected dataset among them).

        Grouped in SQL over the base's index range, and only the page's groups come back: a few
        milliseconds for a base of 10,000 examples.
        """
        where, params = _matching(base, search)
        rows = self.db.query(
            f"SELECT output, count(*) AS n, sum(positive) AS positive, count(dataset_id) AS dataset FROM examples"
            f" WHERE {where} GROUP BY output ORDER BY casefold(output), output LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [(row["output"], int(row["n"]), int(row["positive"]), int(row["dataset"])) for row in rows]

    def examples_answering(
        self, base: int, outputs: Sequence[str], search: str = "", per_output: int | None = None
    ) -> list[StoredExample]:
        """The examples a base uses that give these answers, oldest first (at most ``per_output`` of each)."""
        where, params = _matching(base, search)
        found: list[StoredExample] = []
        for start in range(0, len(outputs), 500):  # within SQLite's bound-parameter limit
            chunk = list(outputs[start : start + 500])
            rows = self.db.query(
                "SELECT * FROM (SELECT id, input, output, positive, source, author_id, created_at, dataset_id,"
                " row_number() OVER (PARTITION BY output ORDER BY id) AS nth"
                f" FROM examples WHERE {where} AND output IN ({', '.join('?' * len(chunk))}))"
                " WHERE nth <= ? ORDER BY output, id",
                (*params, *chunk, per_output if per_output is not None else 2**62),
            )
            found += [_stored(row) for row in rows]
        return found

    def example(self, base: int, example_id: int) -> StoredExample | None:
        """One example the base uses; None for another base's, or one of a dataset no longer selected."""
        row = self.db.query_one(
            "SELECT id, input, output, positive, source, author_id, created_at, dataset_id"
            f" FROM examples WHERE id = ?2 AND base = ?1 AND {IN_USE}",
            (base, example_id),
        )
        return _stored(row) if row else None

    def examples_in_use(self, base: int) -> list[Example]:
        """Every example a base uses, taught and of its selected dataset, in the order they came."""
        rows = self.db.query(
            f"SELECT input, output, positive FROM examples WHERE base = ?1 AND {IN_USE} ORDER BY id", (base,)
        )
        return [Example(row["input"], row["output"], bool(row["positive"])) for row in rows]

    def rewrite_examples(
        self,
        base: int,
        *,
        replace: Sequence[tuple[int, Example]] = (),
        delete: Sequence[int] = (),
        change: Change | None = None,
    ) -> list[int] | None:
        """Replaces and deletes examples taught in a base, all or nothing; the new examples' ids, or None when
        one of them is no longer there (or is a dataset's): then nothing changed.

        A replaced example becomes a new row (its source, author and date kept) so that the serving layers,
        which follow the newest ids, answer with it at once; its embedding (same question), the correction
        that made it and the review inbox's note of whose question it is move with it. A correction whose
        example is deleted goes with it (its other example stays, still its author's).
        """
        old_ids = [old_id for old_id, _ in replace] + list(delete)
        with self.db.transaction() as db:
            found: dict[int, Any] = {}
            for start in range(0, len(old_ids), 500):
                chunk = old_ids[start : start + 500]
                rows = db.execute(
                    "SELECT id, input, source, author_id, created_at FROM examples"
                    f" WHERE base = ? AND dataset_id IS NULL AND id IN ({', '.join('?' * len(chunk))})",
                    (base, *chunk),
                ).fetchall()
                found |= {row["id"]: row for row in rows}
            if len(found) != len(old_ids):  # one is gone, a dataset's, another base's, or named twice
                return None
            new_ids = []
            for old_id, example in replace:
                old = found[old_id]
                new_id = db.execute(
                    "INSERT INTO examples (base, input, output, positive, source, dataset_id, author_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, NULL, ?, ?) RETURNING id",
                    (
                        base,
                        example.input,
                        example.output,
                        int(example.positive),
                        old["source"],
                        old["author_id"],
                        old["created_at"],
                    ),
                ).fetchone()[0]
                if old["input"] == example.input:  # the embedding is the question's
                    db.execute(
                        "INSERT INTO example_vectors SELECT ?, vector FROM example_vectors WHERE example_id = ?",
                        (new_id, old_id),
                    )
                db.execute(
                    "INSERT INTO review_examples SELECT ?, user_id, topic_id FROM review_examples WHERE example_id = ?",
                    (new_id, old_id),
                )
                for column in ("positive_example_id", "negative_example_id"):
                    db.execute(
                        f"UPDATE corrections SET {column} = ? WHERE base = ? AND {column} = ?", (new_id, base, old_id)
                    )
                new_ids.append(new_id)
            for old_id in delete:
                db.execute(
                    "DELETE FROM corrections WHERE base = ?1"
                    " AND (positive_example_id = ?2 OR negative_example_id = ?2)",
                    (base, old_id),
                )
            # Their embeddings and review inbox notes go with them (ON DELETE CASCADE).
            db.executemany("DELETE FROM examples WHERE id = ?", [(old_id,) for old_id in old_ids])
            db.execute("UPDATE bases SET revision = revision + 1 WHERE id = ?", (base,))
            note(db, base, change)
            return new_ids

    # --- model versions ----------------------------------------------------------------------------

    def save_model_file(self, path: str, data: bytes) -> None:
        """A trained model's file, kept in the database for processes on other machines (PostgreSQL)."""
        with self.db.transaction() as db:
            db.execute(
                "INSERT INTO model_files (path, data, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET data = excluded.data",
                (path, data, utc_now()),
            )

    def model_file(self, path: str) -> bytes | None:
        row = self.db.query_one("SELECT data FROM model_files WHERE path = ?", (path,))
        return bytes(row["data"]) if row else None

    def active_model(self, base: int) -> ModelVersion | None:
        row = self.db.query_one(
            "SELECT m.*, j.max_example_id AS trained_through, j.result FROM bases b"
            " JOIN model_versions m ON m.id = b.active_model JOIN jobs j ON j.id = m.job_id WHERE b.id = ?",
            (base,),
        )
        return model_version(row) if row else None

    def active_model_id(self, base: int) -> int | None:
        """One indexed read: which version answers in a base now (None: none trained yet)."""
        row = self.db.query_one("SELECT active_model FROM bases WHERE id = ?", (base,))
        return row["active_model"] if row else None

    def model_versions(self, base: int, limit: int = 10) -> list[ModelVersion]:
        rows = self.db.query(
            "SELECT m.*, j.max_example_id AS trained_through, j.result FROM model_versions m"
            " JOIN jobs j ON j.id = m.job_id WHERE m.base = ? ORDER BY m.id DESC LIMIT ?",
            (base, limit),
        )
        return [model_version(r) for r in rows]

    def roll_back(
        self, base: int, change: Callable[[ModelVersion, ModelVersion], Change] | None = None
    ) -> tuple[ModelVersion, ModelVersion] | None:
        """Retires the base's serving model and serves the newest good one before it; None if there is none.

        ``change``: the audit entry, made from the version retired and the one serving again.
        """
        with self.db.transaction() as db:
            row = db.execute("SELECT active_model FROM bases WHERE id = ?", (base,)).fetchone()
            if row is None or row[0] is None:
                return None
            current = int(row[0])
            previous = db.execute(
                "SELECT id FROM model_versions WHERE base = ? AND id < ? AND status = 'ready' ORDER BY id DESC LIMIT 1",
                (base, current),
            ).fetchone()
            if previous is None:
                return None
            db.execute("UPDATE model_versions SET status = 'rolled_back' WHERE id = ?", (current,))
            db.execute("UPDATE bases SET active_model = ? WHERE id = ?", (previous[0], base))
            old = model_version(db.execute("SELECT * FROM model_versions WHERE id = ?", (current,)).fetchone())
            new = model_version(db.execute("SELECT * FROM model_versions WHERE id = ?", (previous[0],)).fetchone())
            note(db, base, change(old, new) if change is not None else None)
        return old, new

    # --- what a server's admins set ----------------------------------------------------------------

    def settings(self, base: int) -> BaseSettings:
        row = self.db.query_one("SELECT use_global, admin_roles, persona FROM bases WHERE id = ?", (base,))
        if row is None:
            return BaseSettings()
        roles = tuple(json.loads(row["admin_roles"])) if row["admin_roles"] is not None else None
        return BaseSettings(bool(row["use_global"]), roles, row["persona"])

    def change_settings(
        self, base: int, by: int | None, *, change: Change | None = None, **changes: Any
    ) -> BaseSettings:
        """Sets some of ``use_global``, ``admin_roles`` (a list, or None for the default) and ``persona``."""
        columns = {"use_global": int, "admin_roles": json.dumps, "persona": str}
        with self.db.transaction() as db:
            ensure_base(db, base)
            for name, value in changes.items():
                stored = None if value is None else columns[name](value)
                db.execute(f"UPDATE bases SET {name} = ? WHERE id = ?", (stored, base))
            db.execute("UPDATE bases SET changed_by = ?, changed_at = ? WHERE id = ?", (by, utc_now(), base))
            note(db, base, change)
        return self.settings(base)

    def bases(self) -> list[int]:
        """Every base with anything stored, the bot-wide one first (for owners' lists)."""
        return [row["id"] for row in self.db.query("SELECT id FROM bases ORDER BY id")]

    def activate(self, base: int, version_id: int) -> tuple[ModelVersion, ModelVersion] | None:
        """Serves one of the base's earlier versions (ready or rolled back); those after it are retired.

        None when that version is not the base's, is the one serving, or never finished.
        """
        with self.db.transaction() as db:
            row = db.execute("SELECT active_model FROM bases WHERE id = ?", (base,)).fetchone()
            wanted = db.execute(
                "SELECT * FROM model_versions WHERE id = ? AND base = ? AND status IN ('ready', 'rolled_back')",
                (version_id, base),
            ).fetchone()
            if row is None or row[0] is None or wanted is None or row[0] == version_id:
                return None
            current = db.execute("SELECT * FROM model_versions WHERE id = ?", (row[0],)).fetchone()
            db.execute(
                "UPDATE model_versions SET status = 'rolled_back' WHERE base = ? AND id > ? AND status = 'ready'",
                (base, version_id),
            )
            db.execute("UPDATE model_versions SET status = 'ready' WHERE id = ?", (version_id,))
            db.execute("UPDATE bases SET active_model = ? WHERE id = ?", (version_id, base))
        return model_version(current), model_version(wanted)
