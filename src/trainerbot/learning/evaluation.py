"""Testing a model: test cases, the report, and its chart."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from trainerbot.errors import InvalidInput
from trainerbot.learning.examples import MAX_TEXT, csv_delimiter, decode_text, load_json_document
from trainerbot.learning.model import Prediction

UNKNOWN = "unknown"


@dataclass(frozen=True)
class TestCase:
    input: str
    output: str | None  # None: the right answer is "unknown"


@dataclass
class TestReport:
    total: int
    passed: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    unknown_total: int = 0
    unknown_passed: int = 0

    @property
    def failed(self) -> int:
        return self.total - self.passed

    @property
    def accuracy(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def unknown_recall(self) -> float | None:
        """Of the cases whose answer is "unknown", the share the model did not answer."""
        return self.unknown_passed / self.unknown_total if self.unknown_total else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "passed": self.passed,
            "failed": self.failed,
            "accuracy": round(self.accuracy, 4),
            "unknown_recall": None if self.unknown_recall is None else round(self.unknown_recall, 4),
            "failures": self.failures,
            "results": self.results,
        }


CASE_KEYS = {"input", "output"}


def parse_cases(data: bytes | str, name: str) -> list[TestCase]:
    """Test cases: a JSON list (the usual), JSON Lines, or a CSV with input and output columns (an empty
    output: the answer should be unknown), by the file's name; text typed after `!test` is JSON."""
    text = data if isinstance(data, str) else decode_text(data, name)
    suffix = PurePath(name).suffix.lower()
    if suffix == ".jsonl":
        items, lines = _json_lines(text, name)
    elif suffix in (".csv", ".tsv"):
        items, lines = _csv_rows(text, name, "\t" if suffix == ".tsv" else csv_delimiter(text))
    else:
        items, lines = load_json_document(text, name, "test cases")
    cases = []
    for item, line in zip(items, lines, strict=True):
        if not isinstance(item, dict) or "input" not in item:
            raise InvalidInput(f'{name}, line {line}: each case needs "input" (and "output", null for unknown)')
        if others := sorted(set(item) - CASE_KEYS):  # "expected": ... would otherwise test for "unknown"
            raise InvalidInput(
                f'{name}, line {line}: a case has "input" and "output" (null for unknown), '
                f"not {', '.join(json.dumps(key) for key in others)}"
            )
        question, answer = item["input"], item.get("output")
        if not isinstance(question, str) or not question.strip() or len(question) > MAX_TEXT:
            raise InvalidInput(f'{name}, line {line}: "input" must be non-empty text of at most {MAX_TEXT} characters')
        if answer is not None and (not isinstance(answer, str) or len(answer) > MAX_TEXT):
            raise InvalidInput(f'{name}, line {line}: "output" must be text of at most {MAX_TEXT} characters, or null')
        if any("\ud800" <= c <= "\udfff" for c in question + (answer or "")):  # typed JSON escapes can make these
            raise InvalidInput(f"{name}, line {line}: a lone surrogate (\\ud800-\\udfff) is not valid text")
        cases.append(TestCase(question.strip(), answer.strip() if answer is not None else None))
    if not cases:
        raise InvalidInput(f"{name}: no test cases found")
    return cases


def _json_lines(text: str, name: str) -> tuple[list[object], list[int]]:
    items, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except (ValueError, RecursionError):
            raise InvalidInput(f'{name}, line {number}: not a JSON case like {{"input": ..., "output": ...}}') from None
        lines.append(number)
    return items, lines


def _csv_rows(text: str, name: str, delimiter: str) -> tuple[list[object], list[int]]:
    try:
        return _read_csv_rows(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), name)
    except csv.Error as exc:
        raise InvalidInput(f"{name}: malformed CSV ({exc})") from None


def _read_csv_rows(reader: Any, name: str) -> tuple[list[object], list[int]]:
    header = [column.strip().lower() for column in next(reader, [])]
    if "input" not in header or "output" not in header:
        raise InvalidInput(f"{name}, line 1: the header must name an input and an output column")
    at_input, at_output = header.index("input"), header.index("output")
    items, lines = [], []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InvalidInput(f"{name}, line {reader.line_num}: expected {len(header)} columns, found {len(row)}")
        items.append({"input": row[at_input], "output": row[at_output].strip() or None})
        lines.append(reader.line_num)
    return items, lines


def evaluate(cases: list[TestCase], predictions: list[Prediction]) -> TestReport:
    report = TestReport(total=len(cases), passed=0)
    for case, prediction in zip(cases, predictions, strict=True):
        ok = prediction.output == case.output
        report.passed += ok
        if case.output is None:
            report.unknown_total += 1
            report.unknown_passed += ok
        row = {
            "input": case.input,
            "expected": case.output,
            "got": prediction.output,
            "confidence": prediction.confidence,
            "passed": ok,
        }
        report.results.append(row)
        if not ok:
            report.failures.append({k: row[k] for k in ("input", "expected", "got", "confidence")})
    return report


def report_json(report: TestReport) -> bytes:
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False).encode()


def chart_png(report: TestReport, top: int = 15) -> bytes:
    """Passed and failed cases for the most tested expected outputs, as a horizontal bar chart."""
    buffer = io.BytesIO()
    chart_figure(report, top).savefig(buffer, format="png")
    return buffer.getvalue()


def chart_figure(report: TestReport, top: int = 15):  # -> matplotlib.figure.Figure, imported when drawn
    """The figure ``chart_png`` draws."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    passed: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for row in report.results:
        label = row["expected"] if row["expected"] is not None else UNKNOWN
        (passed if row["passed"] else failed)[label] += 1
    labels = [label for label, _ in (passed + failed).most_common(top)][::-1]
    short = [label if len(label) <= 40 else label[:37] + "..." for label in labels]
    figure = Figure(figsize=(8, 1.5 + 0.35 * len(labels)), dpi=100)
    axes = figure.add_subplot()
    axes.barh(short, [passed[label] for label in labels], color="#3ba55d", label="passed")
    axes.barh(
        short,
        [failed[label] for label in labels],
        left=[passed[label] for label in labels],
        color="#ed4245",
        label="failed",
    )
    axes.set_xlabel("test cases")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole cases, never 0.25 of one
    axes.set_title(f"{report.passed}/{report.total} passed ({report.accuracy:.0%})")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure
