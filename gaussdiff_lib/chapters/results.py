"""Results as data: the numbers a chapter's prose quotes, beside the paper's, in a form the book publishes.

A chapter ends with checks of the paper's claims (:class:`gaussdiff_lib.stats.Check`: gates and evidence, the
evidence with its controls' outcomes), computed by :mod:`gaussdiff_lib.claims`. :func:`quote` pairs one number the
prose quotes (ours, with its interval where there is one) with what the paper states for it (the book page "The
paper's claims" states each claim) and with the checks that number is evidence for; whether it *reproduced* is the
verdict of those checks and of the gates of their claims (:func:`gaussdiff_lib.stats.verdict`), never typed in.
:func:`record` shows a chapter's quoted numbers as a table and stores them, with every check, in the executed
notebook as a display output of type ``MIME`` (a JSON record with a ``SCHEMA`` version). :func:`read`,
:func:`gather`, :func:`gather_checks` and :func:`claims_summary` take them back out of executed notebooks: the book
publishes each page's record as ``<page>.results.json`` beside the page, and the Status page gathers all of them
into its tables: per claim, the checks, and paper vs ours (``book/_ext``).
"""
from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["Quoted", "quote", "record", "payload", "markdown", "validate", "read", "executed", "gather",
           "gather_checks", "claims_summary", "SkippedNotebook", "MIME", "SCHEMA", "REPRODUCED", "COLUMNS"]

MIME = "application/vnd.gaussdiff.results+json"   #: the display output a chapter's record travels in
SCHEMA = 2                                         #: version of the record's layout; bump it when fields change
REPRODUCED = ("yes", "partly", "no", "not tested")  #: the words of :func:`gaussdiff_lib.stats.verdict`
_CHAPTER = re.compile(r"[a-z][a-z0-9_]*")
#: the fields of each row :func:`gather` returns
COLUMNS = ("chapter", "title", "quantity", "ours", "interval", "paper", "reproduced", "claim", "unit")
_ROW_KEYS = {"quantity", "ours", "interval", "paper", "reproduced", "claim", "unit", "checks"}


def _finite(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise ValueError(f"{what} must be a real number, got {x!r} ({type(x).__name__})")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{what} is {x}; a quoted number must be finite (report a missing value as text instead)")
    return x


def _text(x, what: str, optional: bool = False) -> str | None:
    if x is None and optional:
        return None
    if not isinstance(x, str) or not x.strip():
        raise ValueError(f"{what} must be a non-empty string{' or None' if optional else ''}, got {x!r}")
    return x


@dataclass(frozen=True)
class Quoted:
    """One number a chapter quotes, beside the paper's (one row of the Status page's paper-vs-ours table).

    ``quantity`` says what is measured, briefly ("RMSE(D_L, D_G), largest over σ"); ``ours`` is our value, a finite
    number or text for a count ("7 of 10"); ``paper`` is the paper's value as it states it ("< 0.05",
    "≈ 0.97 (N = 70000)"), or None where it gives none; ``reproduced`` is "yes", "partly", "no" or "not tested", the
    verdict of the checks this number is evidence for (their claims in ``checks``); ``interval`` is the (lo, hi) 95% interval
    of a numeric ``ours``, or None; ``claim`` says where the paper makes the claim ("claim 4, Fig 2") and ``unit``
    is the unit of ``ours`` where it has one. Build rows with :func:`quote`, which derives ``reproduced``.
    """

    quantity: str
    ours: float | str
    paper: str | None
    reproduced: str
    interval: tuple[float, float] | None = None
    claim: str = ""
    unit: str = ""
    checks: tuple[str, ...] = ()

    def __post_init__(self):
        _text(self.quantity, "quantity")
        what = f"{self.quantity!r}"
        if isinstance(self.ours, str):
            _text(self.ours, f"{what}: ours")
            if self.interval is not None:
                raise ValueError(f"{what}: an interval needs a numeric value, but ours is the text {self.ours!r}")
        else:
            object.__setattr__(self, "ours", _finite(self.ours, f"{what}: ours"))
        _text(self.paper, f"{what}: paper", optional=True)
        if self.reproduced not in REPRODUCED:
            raise ValueError(f"{what}: reproduced must be one of {REPRODUCED} (the verdict of its checks), "
                             f"got {self.reproduced!r}")
        if self.interval is not None:
            if isinstance(self.interval, str) or len(self.interval) != 2:
                raise ValueError(f"{what}: interval must be a pair (lo, hi) or None, got {self.interval!r}")
            lo, hi = (_finite(v, f"{what}: interval bound") for v in self.interval)
            if lo > hi:
                raise ValueError(f"{what}: interval ({lo}, {hi}) has lo > hi; give it as (lo, hi)")
            if not lo <= self.ours <= hi:
                raise ValueError(f"{what}: the value {self.ours} lies outside its own interval ({lo}, {hi})")
            object.__setattr__(self, "interval", (lo, hi))
        for name in ("claim", "unit"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{what}: {name} must be a string, got {getattr(self, name)!r}")
        if isinstance(self.checks, str) or not all(isinstance(c, str) and c for c in self.checks):
            raise ValueError(f"{what}: checks must be a sequence of non-empty strings (the checks' claims)")
        object.__setattr__(self, "checks", tuple(self.checks))

    def as_dict(self) -> dict:
        """The row as JSON-ready data (the layout of ``SCHEMA``)."""
        return {"quantity": self.quantity, "ours": self.ours,
                "interval": list(self.interval) if self.interval is not None else None, "paper": self.paper,
                "reproduced": self.reproduced, "claim": self.claim, "unit": self.unit, "checks": list(self.checks)}

    @classmethod
    def from_dict(cls, row: dict) -> "Quoted":
        """A row back from its JSON data; unknown or missing fields are refused."""
        if not isinstance(row, dict):
            raise ValueError(f"a quoted row must be a JSON object, got {type(row).__name__}")
        missing, extra = {"quantity", "ours", "paper", "reproduced"} - set(row), set(row) - _ROW_KEYS
        if missing or extra:
            raise ValueError(f"malformed quoted row {row.get('quantity', row)!r}: missing fields {sorted(missing)}, "
                             f"unknown fields {sorted(extra)}")
        interval, checks = row.get("interval"), row.get("checks", [])
        if not isinstance(checks, list):
            raise ValueError(f"malformed quoted row {row['quantity']!r}: checks must be a list of the checks' claims, "
                             f"got {type(checks).__name__}")
        return cls(row["quantity"], row["ours"], row["paper"], row["reproduced"],
                   tuple(interval) if isinstance(interval, list) else interval, row.get("claim", ""),
                   row.get("unit", ""), tuple(checks))

    def ours_text(self, digits: int = 3) -> str:
        """Our value as the tables show it: ``value [lo, hi] unit``."""
        if isinstance(self.ours, str):
            text = self.ours
        else:
            text = f"{self.ours:.{digits}g}"
            if self.interval is not None:
                text += f" [{self.interval[0]:.{digits}g}, {self.interval[1]:.{digits}g}]"
        return f"{text} {self.unit}" if self.unit else text

    def paper_text(self) -> str:
        """The paper's value as the tables show it, with where the paper makes the claim."""
        return (self.paper or "(no value given)") + (f" ({self.claim})" if self.claim else "")


def _as_checks(checks) -> list:
    from ..stats import Check

    checks = [checks] if isinstance(checks, Check) else list(checks)
    if not checks or not all(isinstance(c, Check) for c in checks):
        raise ValueError("checks must be one gd.stats.Check or a non-empty list of them (the chapter's checks that "
                         "this number is evidence for)")
    return checks


def quote(quantity: str, ours, paper: str | None, checks, claim: str = "", unit: str = "") -> Quoted:
    """A :class:`Quoted` row whose ``reproduced`` is the verdict of ``checks``.

    ``ours`` is a :class:`gaussdiff_lib.stats.Estimate` (its value and interval are quoted), a number, or text;
    ``checks`` is the :class:`gaussdiff_lib.stats.Check` (or list of them) this number is evidence for. When the row
    is recorded with all of the chapter's checks (:func:`record`), the gates of its checks' claims join them: a
    number whose claim was not tested is not reproduced, whatever its own check says.
    """
    from ..stats import Estimate, verdict

    checks = _as_checks(checks)
    interval = None
    if isinstance(ours, Estimate):
        ours, interval = ours.value, (ours.lo, ours.hi)
    return Quoted(quantity, ours, paper, verdict(checks), interval, claim, unit, tuple(c.claim for c in checks))


def _consistent(rows: Sequence[Quoted], verdict: str | None, where: str) -> None:
    """A row cannot contradict its chapter: a chapter reproduced ("yes") leaves no row "partly" or "no", one not
    reproduced ("no") no row "yes" or "partly", one not tested every row "not tested" (a row's checks are some of
    the chapter's; a row whose checks are all uninformative is "not tested" whatever the chapter's verdict)."""
    if verdict is None:
        return
    if verdict not in REPRODUCED:
        raise ValueError(f"{where}: verdict must be one of {REPRODUCED}, got {verdict!r}")
    allowed = {"yes": {"yes", "not tested"}, "no": {"no", "not tested"}, "not tested": {"not tested"},
               "partly": set(REPRODUCED)}[verdict]
    bad = [r.quantity for r in rows if r.reproduced not in allowed]
    if bad:
        raise ValueError(f"{where}: the chapter's verdict is {verdict!r}, so no quoted row may say otherwise, but "
                         f"{bad} do; quote each number with the chapter's own checks")


def _summary(checks) -> dict:
    """Per claim number: its verdict, how many evidence checks count (informative) and how many do not, and its
    gates."""
    from ..stats import verdicts

    out = {}
    for number, word in verdicts(checks).items():
        mine = [c for c in checks if c.number == number]
        out["none" if number is None else str(number)] = {
            "verdict": word, "informative": sum(c.informative for c in mine),
            "uninformative": sum(c.kind == "evidence" and not c.informative for c in mine),
            "gates": [{"claim": c.claim, "passed": c.passed, "evidence": c.evidence} for c in mine if c.kind == "gate"]}
    return out


def _with_gates(rows: list[Quoted], checks) -> list[Quoted]:
    """Each row's reproduced from its checks together with the gates of their claims (a row cites evidence; the
    gates of that evidence's claim decide whether it was tested at all)."""
    import dataclasses

    from ..stats import verdict

    by_name = {c.claim: c for c in checks}
    out = []
    for r in rows:
        if not r.checks:              # a measurement no check rests on (a report's linearity curve): not tested
            out.append(dataclasses.replace(r, reproduced="not tested"))
            continue
        mine = [by_name[n] for n in r.checks]
        numbers = {c.number for c in mine}
        gates = [c for c in checks if c.kind == "gate" and c.number in numbers and c.claim not in r.checks]
        out.append(dataclasses.replace(r, reproduced=verdict([*mine, *gates])))
    return out


def payload(chapter: str, rows: Iterable[Quoted], checks=None) -> dict:
    """The JSON record of a chapter's quoted numbers (what :func:`record` stores). With ``checks`` (all of the
    chapter's checks) the record carries every check (kind, controls, whether it counts), the verdict of each claim
    and of the chapter, and each row's checks must be among them; a row's ``reproduced`` is then re-derived with the
    gates of its claims."""
    if not isinstance(chapter, str) or not _CHAPTER.fullmatch(chapter):
        raise ValueError(f"chapter must be the notebook's name in lower case (e.g. 'linear_gaussian'), got {chapter!r}")
    rows = list(rows)
    if not rows or not all(isinstance(r, Quoted) for r in rows):
        raise ValueError(f"{chapter}: record needs a non-empty list of Quoted rows (made with quote())")
    names = [r.quantity for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{chapter}: each quantity is quoted once, got duplicates "
                         f"{sorted({n for n in names if names.count(n) > 1})}")
    verdict, summary, records = None, {}, []
    if checks is not None:
        from ..stats import verdict as _verdict

        checks = _as_checks(checks)
        described = [c.claim for c in checks]
        if len(set(described)) != len(described):
            raise ValueError(f"{chapter}: two checks share a description "
                             f"{sorted({d for d in described if described.count(d) > 1})}; each check says what it tests")
        verdict = _verdict(checks)
        known = set(described)
        foreign = [r.quantity for r in rows if not set(r.checks) <= known]
        if foreign:
            raise ValueError(f"{chapter}: {foreign} cite checks that are not among the chapter's checks")
        rows = _with_gates(rows, checks)
        summary, records = _summary(checks), [c.as_dict() for c in checks]
    _consistent(rows, verdict, chapter)
    return {"schema": SCHEMA, "chapter": chapter, "verdict": verdict, "claims": summary, "checks": records,
            "rows": [r.as_dict() for r in rows]}


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(rows: Sequence[Quoted]) -> str:
    """The rows as a Markdown table (what a page shows of the record)."""
    lines = ["| quantity | ours [95% interval] | paper | reproduced |", "|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(_escape(c) for c in (r.quantity, r.ours_text(), r.paper_text(), r.reproduced))
                     + " |")
    return "\n".join(lines)


def record(chapter: str, rows: Iterable[Quoted], checks=None) -> None:
    """Show a chapter's quoted numbers as a table and store them in the notebook as a ``MIME`` output.

    The output bundle carries the JSON record (:func:`payload`), a Markdown table that the page renders, and
    plain text for a console. Returns None, so that a call ending a cell displays the table once.
    """
    from IPython.display import display

    rows = list(rows)
    data = payload(chapter, rows, checks)
    text = "\n".join(f"{r.quantity}: ours {r.ours_text()}, paper {r.paper or 'n/a'}, reproduced {r.reproduced}"
                     for r in rows)
    display({MIME: data, "text/markdown": markdown(rows), "text/plain": text}, raw=True)


def validate(data, where: str = "record") -> dict:
    """Check a record read back from a notebook (``SCHEMA``, chapter, rows, checks, verdicts) and return it. The
    verdicts and each check's status are recomputed from the checks, never trusted: a record whose stored verdict
    disagrees with its own checks is refused."""
    from ..stats import Check, verdict as _verdict

    if not isinstance(data, dict):
        raise ValueError(f"{where}: a results record must be a JSON object, got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{where}: results schema {data.get('schema')!r}, this library reads schema {SCHEMA}; "
                         "re-execute the chapter with this version of the library")
    extra = set(data) - {"schema", "chapter", "verdict", "claims", "checks", "rows"}
    if extra:
        raise ValueError(f"{where}: unknown fields {sorted(extra)} in a schema-{SCHEMA} record")
    chapter = data.get("chapter")
    if not isinstance(chapter, str) or not _CHAPTER.fullmatch(chapter):
        raise ValueError(f"{where}: malformed chapter name {chapter!r}")
    if not isinstance(data.get("rows"), list) or not data["rows"]:
        raise ValueError(f"{where}: a record needs a non-empty list of rows")
    if not isinstance(data.get("checks", []), list):
        raise ValueError(f"{where}: checks must be a list")
    try:
        rows = [Quoted.from_dict(r) for r in data["rows"]]
        checks = [Check.from_dict(c) for c in data.get("checks", [])]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    verdict = data.get("verdict")
    if checks:
        if verdict != _verdict(checks):
            raise ValueError(f"{where}: the record says {verdict!r} but its checks give {_verdict(checks)!r}")
        rows = _with_gates(rows, checks) if all(set(r.checks) <= {c.claim for c in checks} for r in rows) else rows
    _consistent(rows, verdict, where)
    return {"schema": SCHEMA, "chapter": chapter, "verdict": verdict, "claims": _summary(checks) if checks else {},
            "checks": [c.as_dict() for c in checks], "rows": [r.as_dict() for r in rows]}


def _title(cells) -> str:
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            src = "".join(cell.get("source", ""))
            for line in src.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def read(path) -> dict | None:
    """The results record of one executed notebook, or None if it records none: the validated record with the
    page's ``title`` and the ``profile`` it ran under (from the executor's metadata) added. A notebook with two
    records, or a record naming another chapter than the notebook's file, is refused."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable notebook ({err})") from None
    if not isinstance(nb, dict):
        raise ValueError(f"{path}: a notebook must be a JSON object, got {type(nb).__name__}")
    found = [out["data"][MIME] for cell in nb.get("cells", []) if cell.get("cell_type") == "code"
             for out in cell.get("outputs", []) if MIME in out.get("data", {})]
    if not found:
        return None
    if len(found) > 1:
        raise ValueError(f"{path}: {len(found)} results records; a chapter records its quoted numbers once")
    data = found[0]
    if isinstance(data, str):   # a front end may store JSON outputs as text
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: the results record is not JSON ({err})") from None
    data = validate(data, str(path))
    if data["chapter"] != path.stem:
        raise ValueError(f"{path}: the record names chapter {data['chapter']!r} but sits in {path.name}; "
                         f"call record({path.stem!r}, ...)")
    profile = (nb.get("metadata", {}).get("gaussdiff") or {}).get("profile")
    return {**data, "title": _title(nb.get("cells", [])), "profile": profile}


class SkippedNotebook(UserWarning):
    """A file of an executed-notebooks folder that :func:`gather` left out: a hidden or editor's file
    (``.name.ipynb``, ``~name.ipynb``) or one that is not (yet) a whole notebook, e.g. half written."""


def executed(folder) -> list[Path]:
    """The executed notebooks of ``folder`` that :func:`gather` reads, sorted by file name. Hidden and editor's
    files (names starting with '.' or '~') are never chapters and are left out; a file that does not parse as
    JSON (half written, cut short) is left out with a :class:`SkippedNotebook` warning naming it."""
    import warnings

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of executed notebooks")
    out = []
    for path in sorted(folder.glob("*.ipynb")):
        if path.name.startswith((".", "~")):
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"{path.name} skipped: not a whole notebook ({err}); execute it again or remove it",
                          SkippedNotebook, stacklevel=3)
            continue
        out.append(path)
    return out


def gather(folder) -> list[dict]:
    """Every quoted row of the executed notebooks (:func:`executed`) in ``folder``, chapter by chapter (sorted by
    file name): dicts with chapter, title, quantity, ours, interval, paper, reproduced, claim and unit."""
    rows = []
    for path in executed(folder):
        data = read(path)
        if data is None:
            continue
        for row in data["rows"]:
            rows.append({k: row[k] if k in row else data[k] for k in COLUMNS})
    return rows


def gather_checks(folder) -> list[dict]:
    """Every check of the executed notebooks (:func:`executed`) in ``folder``, chapter by chapter: the check's JSON
    data (claim, number, kind, passed, evidence, controls, informative, status, why_uninformative) with chapter and
    title."""
    out = []
    for path in executed(folder):
        data = read(path)
        if data is not None:
            out += [{"chapter": data["chapter"], "title": data["title"], **c} for c in data["checks"]]
    return out


def claims_summary(checks: list[dict]) -> list[dict]:
    """Per claim of the paper (1 ... 12): the chapters that test it, its verdict over those chapters, the number of
    informative and uninformative evidence checks, and its gates (passed / failed), from :func:`gather_checks`'s
    rows. A claim tested in several chapters is "yes" when every chapter that tested it says yes, "no" when every one
    says no, "not tested" when none tested it, else "partly"."""
    from ..stats import Check, verdicts

    out = []
    for number in range(1, 13):
        mine = [c for c in checks if c.get("number") == number]
        chapters = list(dict.fromkeys(c["chapter"] for c in mine))
        words = [verdicts([Check.from_dict(c) for c in mine if c["chapter"] == ch])[number] for ch in chapters]
        tested = [w for w in words if w != "not tested"]
        word = ("not tested" if not tested else "yes" if all(w == "yes" for w in words) else
                "no" if all(w == "no" for w in tested) else "partly")
        gates = [c for c in mine if c["kind"] == "gate"]
        out.append({"claim": number, "chapters": chapters, "verdict": word,
                    "informative": sum(bool(c["informative"]) for c in mine),
                    "uninformative": sum(c["kind"] == "evidence" and not c["informative"] for c in mine),
                    "gates passed": sum(bool(c["passed"]) for c in gates), "gates": len(gates)})
    return out
