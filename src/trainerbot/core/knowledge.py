"""What a knowledge base knows, answer by answer, for the people who edit it outright (the web dashboard).

Every method names the base it acts on and applies the bot's own rules (``Access.require_admin_of``):
a server's base is its admins', the bot-wide base its owners'; another server's example ids are
"not found", like ids that never were. The checks and messages are `!train`'s, shared with
``TeachingService``. What a change does answers from the next message, as after `!train`
(``TeachingService.taught``), and every change enters the base's audit trail with who made it and
through which front end. Examples of the base's selected dataset are shown but read-only: a dataset
changes by selecting a new one.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from trainerbot.core.files import timestamp
from trainerbot.core.permissions import Access
from trainerbot.core.teaching import TeachingService, fits_id
from trainerbot.core.text import count, short, valid_text
from trainerbot.errors import InvalidInput, NotReady
from trainerbot.learning.examples import MAX_TEXT, checked_text
from trainerbot.storage.audit import AuditEntry, Change
from trainerbot.storage.store import Store
from trainerbot.types import GLOBAL_BASE, Caller, Example, OutFile, StoredExample, Upload

SHOWN_PER_ANSWER = 50  # examples listed under each answer of a page; the rest are counted
MAX_PER_PAGE = 100
EXPORT_FORMATS = ("csv", "jsonl")
SEE = "see the examples taught"
CHANGE = "change the examples taught"
# Characters that end a line for str.splitlines (which reads .jsonl files) but that JSON leaves as they are.
_LINE_BREAKS_IN_JSON = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


@dataclass(frozen=True)
class TaughtAnswer:
    """One answer of a base with its examples: the questions that get it, and those that must not."""

    text: str
    examples: int  # all of them (those matching the search, when there is one)
    positive: int
    negative: int
    from_dataset: int  # of them, the selected dataset's: while there are any, the answer is read-only
    shown: tuple[StoredExample, ...]  # the first few (at most ``SHOWN_PER_ANSWER``), oldest first
    more: int  # how many are not shown


@dataclass(frozen=True)
class AnswersPage:
    items: tuple[TaughtAnswer, ...]
    page: int  # from 1
    pages: int
    per_page: int
    total_answers: int
    total_examples: int
    search: str


@dataclass(frozen=True)
class Edited:
    """What a change did: a sentence for whoever made it, and the examples it stored (an edit makes a new one)."""

    text: str
    example_ids: tuple[int, ...] = ()


class KnowledgeService:
    """Reads and edits one base's examples, named outright by the caller (the dashboard picks a base)."""

    def __init__(self, store: Store, access: Access, teaching: TeachingService) -> None:
        self.store = store
        self.access = access
        self.teaching = teaching

    # --- reading ----------------------------------------------------------------------------------

    def answers(
        self,
        caller: Caller,
        base: int,
        *,
        search: str = "",
        page: int = 1,
        per_page: int = 20,
        shown: int = SHOWN_PER_ANSWER,
    ) -> AnswersPage:
        """One page of the answers a base gives, alphabetical, each with its first ``shown`` examples; ``search``
        keeps the examples whose question or answer holds it (in any case)."""
        self.access.require_admin_of(caller, base, SEE)
        search = valid_text(search.strip())[:MAX_TEXT]
        per_page = min(max(per_page, 1), MAX_PER_PAGE)
        knowledge = self.store.knowledge
        answers, examples = knowledge.answer_totals(base, search)
        pages = max(1, math.ceil(answers / per_page))
        page = min(max(page, 1), pages)
        groups = knowledge.answer_groups(base, search, per_page, (page - 1) * per_page)
        listed: dict[str, list[StoredExample]] = {output: [] for output, *_ in groups}
        for example in knowledge.examples_answering(base, list(listed), search, min(max(shown, 1), SHOWN_PER_ANSWER)):
            listed[example.answer].append(example)
        items = tuple(
            TaughtAnswer(
                text=output,
                examples=total,
                positive=positive,
                negative=total - positive,
                from_dataset=dataset,
                shown=tuple(listed[output]),
                more=total - len(listed[output]),
            )
            for output, total, positive, dataset in groups
        )
        return AnswersPage(items, page, pages, per_page, answers, examples, search)

    def example(self, caller: Caller, base: int, example_id: int) -> StoredExample:
        """One example, to edit it (a dataset's is refused, another base's is "not found")."""
        self.access.require_admin_of(caller, base, SEE)
        return self._editable(base, example_id)

    def audit(self, caller: Caller, base: int, *, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        """The base's changes, newest first, who made them and how; ``before``: older than that entry."""
        self.access.require_admin_of(caller, base, "see who changed what")
        return self.store.audit.entries(base, before=before, limit=min(max(limit, 1), 200))

    def export(self, caller: Caller, base: int, fmt: str) -> OutFile:
        """Every example the base uses as a file `!train` reads back: CSV or JSON lines, each with its polarity."""
        self.access.require_admin_of(caller, base, SEE)
        fmt = fmt.strip().lower().lstrip(".")
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(f"I export as {' or '.join(EXPORT_FORMATS)}, not `{short(fmt, 20)}`.")
        examples = self.store.knowledge.examples_in_use(base)
        if not examples:
            raise NotReady("Nothing is taught here yet: there is nothing to export.")
        name = f"knowledge-{'bot-wide' if base == GLOBAL_BASE else base}-{timestamp()}.{fmt}"
        return OutFile(name, (_csv(examples) if fmt == "csv" else _jsonl(examples)).encode())

    # --- changing -----------------------------------------------------------------------------------

    def add_example(self, caller: Caller, base: int, question: str, answer: str, positive: bool = True) -> Edited:
        """`!train question => answer`, typed in a form: the question need not avoid `=>`."""
        self.access.require_admin_of(caller, base, CHANGE)
        [example] = self.teaching.new_examples(base, [_example(question, answer, positive)])
        self.teaching.check_room(caller, base, [example])
        kind = "positive" if positive else "negative"
        ids = self.store.knowledge.add_examples(
            base,
            [example],
            source=f"train:{caller.via or 'by hand'}",  # "train:": an admin put it in (kept by `!forget me`)
            author_id=caller.user_id,
            change=Change.by(caller, "add example", f"A {kind} example for `{short(example.output, 200)}`"),
        )
        self._taught(caller, base)
        return Edited(f"Stored 1 {kind} example. {_effect(positive)} from now on.", tuple(ids))

    def edit_example(
        self, caller: Caller, base: int, example_id: int, question: str, answer: str, positive: bool
    ) -> Edited:
        """The example replaced by the one given, answering from now on (a new id: see ``rewrite_examples``)."""
        self.access.require_admin_of(caller, base, CHANGE)
        old = self._editable(base, example_id)
        new = _example(question, answer, positive)
        if new == old.example:
            raise InvalidInput(f"Example #{example_id} says that already: nothing changed.")
        if new in self.store.knowledge.already_taught(base, [new]):
            raise InvalidInput(
                f"Another example teaches that already (`{short(new.input, 60)}` → `{short(new.output, 60)}`): "
                f"nothing changed. Delete example #{example_id} instead."
            )
        self.teaching.check_room(caller, base, [new], replacing=[old.example])
        said = (
            f"Example #{example_id}: now a {'positive' if positive else 'negative'} one for `{short(new.output, 200)}`"
        )
        ids = self.store.knowledge.rewrite_examples(
            base, replace=[(example_id, new)], change=Change.by(caller, "edit example", said)
        )
        if ids is None:
            raise NotReady(f"Example #{example_id} was changed or deleted meanwhile: nothing was stored.")
        self._taught(caller, base)
        return Edited(
            f"Example #{example_id} changed (it is #{ids[0]} now). {_effect(positive)} from now on.", tuple(ids)
        )

    def delete_example(self, caller: Caller, base: int, example_id: int) -> Edited:
        """The example no longer counts, from the next message on (its answer stays while others give it)."""
        self.access.require_admin_of(caller, base, CHANGE)
        old = self._editable(base, example_id)
        said = f"Example #{example_id}, {'positive' if old.positive else 'negative'}, for `{short(old.answer, 200)}`"
        deleted = self.store.knowledge.rewrite_examples(
            base, delete=[example_id], change=Change.by(caller, "delete example", said)
        )
        if deleted is None:
            raise NotReady(f"Example #{example_id} was changed or deleted meanwhile.")
        self._taught(caller, base)
        return Edited(f"Example #{example_id} deleted; it no longer counts from now on.")

    def rename_answer(self, caller: Caller, base: int, old: str, new: str) -> Edited:
        """Every example giving answer ``old`` gives ``new`` instead (merged into it, when it is taught already)."""
        self.access.require_admin_of(caller, base, CHANGE)
        examples = self._answer(base, old)
        new = checked_text(new, "the new answer")
        if new == old:
            raise InvalidInput("That is the answer's text already: nothing changed.")
        known = self.store.knowledge.already_taught(base, [Example(e.question, new, e.positive) for e in examples])
        replace: list[tuple[int, Example]] = []
        merged: list[int] = []  # those the new answer has already: one example each is enough
        for example in examples:
            renamed = Example(example.question, new, example.positive)
            if renamed in known:
                merged.append(example.id)
            else:
                replace.append((example.id, renamed))
                known.add(renamed)
        self.teaching.check_room(caller, base, [e for _, e in replace], replacing=[e.example for e in examples])
        said = f"`{short(old, 120)}` → `{short(new, 120)}` ({count(len(examples), 'example')})"
        ids = self.store.knowledge.rewrite_examples(
            base, replace=replace, delete=merged, change=Change.by(caller, "rename answer", said)
        )
        if ids is None:
            raise NotReady("Examples of that answer were changed meanwhile: nothing was stored. Look again.")
        self._taught(caller, base)
        repeats = f" ({count(len(merged), 'example')} it had already merged into them)" if merged else ""
        return Edited(
            f"Renamed: {count(len(examples), 'example')} of `{short(old)}` give `{short(new)}` from now on{repeats}.",
            tuple(ids),
        )

    def delete_answer(self, caller: Caller, base: int, answer: str) -> Edited:
        """Deletes every example giving that answer: from the next message on it is no longer given."""
        self.access.require_admin_of(caller, base, CHANGE)
        examples = self._answer(base, answer)
        said = f"`{short(answer, 200)}` ({count(len(examples), 'example')})"
        deleted = self.store.knowledge.rewrite_examples(
            base, delete=[e.id for e in examples], change=Change.by(caller, "delete answer", said)
        )
        if deleted is None:
            raise NotReady("Examples of that answer were changed meanwhile: nothing was deleted. Look again.")
        self._taught(caller, base)
        return Edited(f"Deleted `{short(answer)}` and its {count(len(examples), 'example')}: I no longer give it.")

    def import_file(self, caller: Caller, base: int, upload: Upload, positive: bool = True) -> str:
        """Exactly `!train` with an attached file, in the base named: the same checks, messages and audit entry."""
        return self.teaching.train(caller, "", [upload], positive, base=base).text

    # --- helpers ----------------------------------------------------------------------------------

    def _editable(self, base: int, example_id: int) -> StoredExample:
        """An example the base uses and an admin may change; another base's is "not found", as a missing one is."""
        found = self.store.knowledge.example(base, example_id) if fits_id(example_id) else None
        if found is None:
            raise NotReady(f"There is no example #{short(str(example_id), 30)} here.")
        if found.from_dataset:
            raise InvalidInput(
                f"Example #{example_id} belongs to the selected dataset `{found.source.removeprefix('dataset:')}`, "
                "which is read-only here: to change it, select a new dataset (`!select_dataset`)."
            )
        return found

    def _answer(self, base: int, answer: str) -> list[StoredExample]:
        """Every example giving that answer (its exact text), when none is a dataset's."""
        examples = self.store.knowledge.examples_answering(base, [valid_text(answer)]) if answer else []
        if not examples:
            raise NotReady(f"No example here gives the answer `{short(answer)}`.")
        dataset = sorted({e.source.removeprefix("dataset:") for e in examples if e.from_dataset})
        if dataset:
            raise InvalidInput(
                f"The selected dataset `{short(dataset[0], 60)}` gives that answer too, and it is read-only here: "
                "nothing changed. To change it, select a new dataset (`!select_dataset`)."
            )
        return examples

    def _taught(self, caller: Caller, base: int) -> None:
        """What was changed answers at once; the model is refitted, unless nothing positive is left to train on
        (then the serving layer withdraws what the old model learned and no longer taught)."""
        if self.store.knowledge.example_counts(base)["positive"]:
            self.teaching.taught(base, caller)
        else:
            self.teaching.taught_now(base)


def _example(question: str, answer: str, positive: bool) -> Example:
    """An example typed in a form, checked as a line of a file is (lone surrogates refused, not replaced)."""
    return Example(checked_text(question, "the question"), checked_text(answer, "the answer"), positive)


def _effect(positive: bool) -> str:
    return "It answers" if positive else "That answer stops"


def _csv(examples: Sequence[Example]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["input", "output", "positive"])
    writer.writerows([e.input, e.output, "true" if e.positive else "false"] for e in examples)
    return buffer.getvalue()


def _jsonl(examples: Sequence[Example]) -> str:
    lines = []
    for e in examples:
        line = json.dumps({"input": e.input, "output": e.output, "positive": e.positive}, ensure_ascii=False)
        for character, escaped in _LINE_BREAKS_IN_JSON.items():
            line = line.replace(character, escaped)
        lines.append(line)
    return "\n".join(lines) + "\n"
