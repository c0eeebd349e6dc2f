"""What each knowledge base knows: its examples, datasets, embeddings, model versions and settings.

Every call names its base (a server's id, or ``GLOBAL_BASE``): a query without one cannot be
written by accident, and nothing here reads or changes another base's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from trainerbot.storage.database import Database, utc_now
from trainerbot.types import BaseSettings, Example, IndexedExample, ModelVersion

# An admin put these examples in: `!train` or `!answer` (admins only), or a selected dataset.
APPROVED = "(source LIKE 'train:%' OR source LIKE 'review:%' OR dataset_id IS NOT NULL)"
# The examples a base uses: those taught one by one, and those of its selected dataset.
IN_USE = "(dataset_id IS NULL OR dataset_id IS (SELECT selected_dataset FROM bases WHERE id = ?1))"


def model_version(row: Any) -> ModelVersion:
    columns = set(row.keys())  # a Row's ``in`` looks at its values, not its column names
    return ModelVersion(**{key: row[key] for key in ModelVersion.__dataclass_fields__ if key in columns})


def ensure_base(db: Any, base: int) -> None:
    """Every base has its row before anything of it is stored (defaults: see ``BaseSettings``)."""
    db.execute("INSERT OR IGNORE INTO bases (id, changed_at) VALUES (?, ?)", (base, utc_now()))


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
    ) -> list[int]:
        now = utc_now()
        with self.db.transaction() as db:
            ensure_base(db, base)
            return [
                db.execute(
                    "INSERT INTO examples (base, input, output, positive, source, dataset_id, author_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (base, ex.input, ex.output, int(ex.positive), source, dataset_id, author_id, now),
                ).lastrowid
                for ex in examples
            ]

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
    ) -> int:
        """Stores a dataset and its examples in one transaction, and makes it the base's selected one."""
        now = utc_now()
        with self.db.transaction() as db:
            ensure_base(db, base)
            dataset_id = db.execute(
                "INSERT INTO datasets (base, name, directory, positive, files, examples, outputs, archive, manifest,"
                " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ).lastrowid
            db.executemany(
                "INSERT INTO examples (base, input, output, positive, source, dataset_id, author_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (base, ex.input, ex.output, int(ex.positive), f"dataset:{name}", dataset_id, created_by, now)
                    for ex in examples
                ],
            )
            db.execute("UPDATE bases SET selected_dataset = ? WHERE id = ?", (dataset_id, base))
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
                "INSERT OR REPLACE INTO example_vectors SELECT ?1, ?2"
                " WHERE EXISTS (SELECT 1 FROM examples WHERE id = ?1)",
                rows,
            )

    def retrievable_state(self, base: int) -> tuple[int, int, int | None]:
        """Changes whenever the positive examples a base uses change: (largest id, count, selected dataset)."""
        row = self.db.query_one(
            "SELECT coalesce(max(id), 0) AS top, count(*) AS n,"
            " (SELECT selected_dataset FROM bases WHERE id = ?1) AS dataset"
            f" FROM examples WHERE base = ?1 AND positive = 1 AND {IN_USE}",
            (base,),
        )
        assert row is not None
        return int(row["top"]), int(row["n"]), row["dataset"]

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

    # --- model versions ----------------------------------------------------------------------------

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
        rows = self.db.query("SELECT * FROM model_versions WHERE base = ? ORDER BY id DESC LIMIT ?", (base, limit))
        return [model_version(r) for r in rows]

    def roll_back(self, base: int) -> tuple[ModelVersion, ModelVersion] | None:
        """Retires the base's serving model and serves the newest good one before it; None if there is none."""
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
        return old, new

    # --- what a server's admins set ----------------------------------------------------------------

    def settings(self, base: int) -> BaseSettings:
        row = self.db.query_one("SELECT use_global, admin_roles, persona FROM bases WHERE id = ?", (base,))
        if row is None:
            return BaseSettings()
        roles = tuple(json.loads(row["admin_roles"])) if row["admin_roles"] is not None else None
        return BaseSettings(bool(row["use_global"]), roles, row["persona"])

    def change_settings(self, base: int, by: int | None, **changes: Any) -> BaseSettings:
        """Sets some of ``use_global``, ``admin_roles`` (a list, or None for the default) and ``persona``."""
        columns = {"use_global": int, "admin_roles": json.dumps, "persona": str}
        with self.db.transaction() as db:
            ensure_base(db, base)
            for name, value in changes.items():
                stored = None if value is None else columns[name](value)
                db.execute(f"UPDATE bases SET {name} = ? WHERE id = ?", (stored, base))
            db.execute("UPDATE bases SET changed_by = ?, changed_at = ? WHERE id = ?", (by, utc_now(), base))
        return self.settings(base)
