"""Result records: one JSON file per run under ``results/``, the leaderboard's source of truth.

``bench export RUN`` writes ``results/<dataset>/<threat model>/[<protocol>/]<entry>__<attack>__<setting>.json``
(never over another run's record without ``--replace``); ``bench validate PATH...`` checks records
against :class:`Record` (pydantic) plus rules a schema cannot express: known defense/attack names,
sample indices inside the split, labels equal to the dataset's, and every summary (accuracies,
intervals, Rob(M), the attack's verdict, its cost) equal to what the per-draw outcomes stored in the
same record give (:mod:`bench.publish.derive`).
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from bench.core.attack import ATTACKS
from bench.core.defense import DEFENSES
from bench.core.errors import BenchError
from bench.core.metrics import resubmission_curve, resubmission_estimates

SCHEMA_VERSION = 2  # 2: per-draw predicted classes (clean, adversarial, selection), per-sample verdicts and costs
Unit = Field(ge=0.0, le=1.0)


class Interval(BaseModel):
    """An accuracy and its 95% interval. That the interval contains the accuracy is checked with
    the record's shapes (:meth:`Record.check_shapes`), not by a validator here: a model validator is
    a Python call from pydantic's parser for each of a record's ~16 intervals (160,000 calls in the
    parse of a 10,000-record board, which both processes of a site build run)."""

    model_config = ConfigDict(extra="forbid")
    acc: float = Unit
    ci_low: float = Unit
    ci_high: float = Unit

    def problem(self) -> str | None:
        """Why the interval is invalid (it does not contain the accuracy), or None."""
        if not self.ci_low - 1e-9 <= self.acc <= self.ci_high + 1e-9:
            return f"CI [{self.ci_low}, {self.ci_high}] does not contain acc {self.acc}"
        return None


class Accuracies(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expected: Interval
    worst: Interval
    majority: Interval


class DefenseInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    config: dict[str, Any]
    nfe: int = Field(ge=0)
    paper: str = ""
    diffusion_model: str = ""
    addt: bool = False


class AttackInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    config: dict[str, Any]
    unreliable: bool = False


class DatasetInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal["toy", "cifar10", "cifar100", "tinyimagenet"]
    n_samples: int = Field(ge=1)
    sample_indices: list[int]


class ThreatModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    norm: Literal["linf", "l2"]
    eps: float = Field(gt=0.0)


class Cost(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wall_seconds: float = Field(ge=0.0)
    attack_seconds: float = Field(ge=0.0)
    device: str
    # mean per sample over the run: purification chains the attack differentiated / ran forward
    gradient_draws_per_sample: float | None = Field(default=None, ge=0.0)
    forward_draws_per_sample: float | None = Field(default=None, ge=0.0)


class RobPoint(Interval):
    """Rob(M): accuracy under M independent resubmissions, with its 95% bootstrap interval."""

    m: int = Field(ge=1)


class Samples(BaseModel):
    """Per-sample outcomes. ``clean_correct`` / ``adv_correct``: how many of the ``eval_draws``
    draws were correct. Schema 2 adds, per sample, every draw's predicted class: ``clean_preds``
    and ``adv_preds`` (the evaluation draws) and ``select_preds`` (the attacker's selection draws
    of the adversarial input, which choose the per-image worst case on the leaderboard), plus the
    attack's own verdict (``reported``) and its cost (``gradient_draws`` / ``forward_draws``).

    Per-draw classes are written one string per sample, each draw's class in a fixed number of
    decimal digits (1 for up to 10 classes, 2 for CIFAR-100): ``"5585555555"`` is ten draws. A
    record stays one line per sample per field, and ten thousand of them parse in a fraction of
    the time lists of integers take (the site build reads them all)."""

    model_config = ConfigDict(extra="forbid")
    label: list[int]
    clean_correct: list[int]
    adv_correct: list[int]
    clean_preds: list[str] | None = None
    adv_preds: list[str] | None = None
    select_preds: list[str] | None = None
    reported: list[float] | None = None
    gradient_draws: list[int] | None = None
    forward_draws: list[int] | None = None


def pred_width(dataset: str) -> int:
    """Decimal digits per draw in a record's per-draw strings: 1 for up to 10 classes, else 2."""
    from bench.zoo.labels import NUM_CLASSES

    return 1 if NUM_CLASSES.get(dataset, 10) <= 10 else 2


def encode_preds(rows: Any, width: int) -> list[str]:
    """(n, K) classes -> n strings of K fixed-width decimal classes."""
    return ["".join(f"{int(p):0{width}d}" for p in row) for row in rows]


def decode_preds(rows: list[str], width: int) -> Any:
    """n strings of K fixed-width decimal classes -> (n, K) int64 array (numpy on the bytes: a site
    build decodes millions of draws)."""
    import numpy as np

    digits = np.frombuffer("".join(rows).encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if width == 2:
        digits = digits[0::2] * 10 + digits[1::2]
    return digits.reshape(len(rows), -1) if rows else digits.reshape(0, 0)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1, 2]
    run_id: str = Field(min_length=1, max_length=64)
    entry: str = Field(min_length=1, max_length=200)
    defense: DefenseInfo
    attack: AttackInfo
    setting: str = Field(pattern=r"^(white|dw_fwd|dw_both|dw_semi:[1-9][0-9]*)$")
    classifier: str
    dataset: DatasetInfo
    threat_model: ThreatModel
    eval_draws: int = Field(ge=1)
    clean: Accuracies
    robust: Accuracies
    attack_reported: Interval | None = None
    # resubmission risk of the adversarial inputs, M = 1..eval_draws (older records lack it)
    rob_m: list[RobPoint] | None = None
    cost: Cost
    seed: int
    # the budgets it was run under (bench/protocols; "paper" = plug-in defaults). Older records lack it
    protocol: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    git_commit: str | None
    package_versions: dict[str, str | None]
    created_at: str
    finished_at: str | None
    samples: Samples
    _text: str = PrivateAttr(default="")  # the file as read, stored verbatim by the site build
    _labels_checked: bool = PrivateAttr(default=False)  # labels compared with the dataset (validate_record)
    _decoded: dict[str, Any] = PrivateAttr(default_factory=dict)  # per-draw classes as arrays (preds)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Record:
        """Shapes, then every summary against what the per-sample outcomes give (each field that
        disagrees is named): a record cannot state a number its own outcomes do not support.
        The second half is left to the caller when the validation context says ``defer_derivation``
        (:func:`check_record_texts`, which checks all its records at once with
        :func:`bench.publish.consistency.inconsistent`)."""
        from bench.publish.derive import agrees, derive, disagreements_with

        if info.context and info.context.get("unchecked"):
            return self  # parse_unchecked: the caller runs check_shapes and the rest (check_parsed) before publishing
        self.check_shapes()
        if info.context and info.context.get("defer_derivation"):
            return self
        derived = derive(self.outcomes(), stated_majority={"clean": self.clean.majority.acc,
                                                           "robust": self.robust.majority.acc})
        if self.rob_m is None and self.schema_version == 1:
            derived.pop("rob_m")  # the oldest records predate stored curves
        problems = [] if agrees(self, derived) else disagreements_with(self, derived)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def check_shapes(self) -> None:
        """The first half of the record's validator: every interval contains its accuracy, every
        per-sample list has n entries, counts lie in 0..K, labels in the dataset's classes, per-draw
        strings have K classes each, times are ordered. Raises ValueError (the validator's message)."""
        clean, robust = self.clean, self.robust
        intervals = [clean.expected, clean.worst, clean.majority, robust.expected, robust.worst, robust.majority,
                     *(self.rob_m or []), *([self.attack_reported] if self.attack_reported is not None else [])]
        if any(interval.problem() for interval in intervals):  # named only then (a build checks 160,000)
            named = [(f"{part}.{kind}", getattr(getattr(self, part), kind))
                     for part in ("clean", "robust") for kind in ("expected", "worst", "majority")]
            named += [(f"rob_m.{i}", point) for i, point in enumerate(self.rob_m or [])]
            if self.attack_reported is not None:
                named.append(("attack_reported", self.attack_reported))
            raise ValueError("; ".join(f"{where}: {problem}" for where, interval in named
                                       if (problem := interval.problem())))
        n, k = self.dataset.n_samples, self.eval_draws
        if len(self.dataset.sample_indices) != n:
            raise ValueError(f"dataset.sample_indices has {len(self.dataset.sample_indices)} entries, n_samples is {n}")
        samples = self.samples
        for name, values in (("label", samples.label), ("clean_correct", samples.clean_correct),
                             ("adv_correct", samples.adv_correct), ("reported", samples.reported),
                             ("gradient_draws", samples.gradient_draws), ("forward_draws", samples.forward_draws)):
            if values is not None and len(values) != n:
                raise ValueError(f"samples.{name} has {len(values)} entries, n_samples is {n}")
            if name.endswith("_correct") and values and (min(values) < 0 or max(values) > k):
                raise ValueError(f"samples.{name} has counts outside 0..eval_draws={k}")
        from bench.zoo.labels import NUM_CLASSES

        classes = NUM_CLASSES.get(self.dataset.name)
        bad = sorted({label for label in samples.label if not 0 <= label < (classes or 10**9)})
        if bad:
            raise ValueError(f"samples.label: classes {bad[:10]} outside 0..{classes - 1} of {self.dataset.name}")
        per_draw = {name: getattr(samples, name) for name in ("clean_preds", "adv_preds", "select_preds")}
        if self.schema_version >= 2:
            absent = [name for name, value in per_draw.items() if value is None]
            if absent:
                raise ValueError(f"schema 2 records carry per-draw outcomes; samples.{', samples.'.join(absent)} missing")
            width = pred_width(self.dataset.name)
            for name, rows in per_draw.items():
                # C-level passes (a site build checks millions of draws); ASCII digits only: str.isdigit
                # also accepts other scripts' digits, which the decoder (decode_preds) cannot read
                joined = "".join(rows)
                if len(rows) != n or set(map(len, rows)) != {k * width} or not (joined.isascii() and
                                                                                 joined.encode().isdigit()):
                    raise ValueError(f"samples.{name} must be {n} strings of eval_draws={k} classes of {width} digit(s)")
        elif any(value is not None for value in per_draw.values()):
            raise ValueError("per-draw outcomes need schema_version 2")
        _check_times(self.created_at, self.finished_at)

    def preds(self, name: str) -> Any:
        """Per-draw classes ``samples.<name>`` (``clean_preds``, ``adv_preds``, ``select_preds``) as an
        (n, K) int array (None in schema 1), decoded once."""
        if name not in self._decoded:
            rows = getattr(self.samples, name)
            self._decoded[name] = None if rows is None else decode_preds(rows, pred_width(self.dataset.name))
        return self._decoded[name]

    def outcomes(self) -> Any:
        """The per-sample outcomes as :class:`bench.publish.derive.Outcomes`."""
        import numpy as np

        from bench.publish.derive import Outcomes

        s = self.samples
        if s.adv_preds is not None and s.clean_preds is not None:
            return Outcomes.from_predictions(s.label, self.preds("clean_preds"), self.preds("adv_preds"),
                                             self.preds("select_preds"), s.reported, s.gradient_draws, s.forward_draws)
        return Outcomes(np.asarray(s.label), np.asarray(s.clean_correct), np.asarray(s.adv_correct), self.eval_draws,
                        reported=None if s.reported is None else np.asarray(s.reported))


def _check_times(created_at: str, finished_at: str | None) -> None:
    """ISO timestamps, finished after created, and not in the future (the site's "Built" date is
    the newest record's)."""
    from datetime import datetime, timedelta

    try:
        created = datetime.fromisoformat(created_at)
        finished = datetime.fromisoformat(finished_at) if finished_at else None
    except ValueError as err:
        raise ValueError(f"created_at / finished_at must be ISO timestamps ({err})") from None
    latest = datetime.utcnow() + timedelta(days=1)
    for name, stamp in (("created_at", created), ("finished_at", finished)):
        if stamp is not None and stamp.replace(tzinfo=None) > latest:
            raise ValueError(f"{name} {stamp.isoformat()} is in the future")
    if finished is not None and finished.replace(tzinfo=None) < created.replace(tzinfo=None):
        raise ValueError(f"finished_at {finished_at} is before created_at {created_at}")


class RecordError(BenchError):
    """A record file failed validation; the message names the file, the field and the problem."""


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<record>"


def validate_record(data: Any, path: Path | str = "<record>", known_defenses: set[str] | None = None,
                    known_attacks: set[str] | None = None, defer_derivation: bool = False) -> Record:
    """Parse and check one record (a dict, or the JSON text of one); raises
    :class:`RecordError` listing every problem. ``defer_derivation``: skip the comparison of its
    summaries with its outcomes, which the caller then does (:func:`check_record_texts`)."""
    context = {"defer_derivation": defer_derivation}
    try:
        record = (Record.model_validate_json(data, context=context) if isinstance(data, (str, bytes))
                  else Record.model_validate(data, context=context))
    except ValidationError as err:
        raise RecordError("\n".join(_schema_problems(err, path))) from None
    problems = _problems_beyond_schema(record, path, known_defenses, known_attacks)
    if problems:
        raise RecordError("\n".join(problems))
    return record


def _schema_problems(err: ValidationError, path: Path | str) -> list[str]:
    return [f"{path}: {_location(e['loc'])}: {message}" for e in err.errors()
            for message in e["msg"].removeprefix("Value error, ").split("; ")]


def _problems_beyond_schema(record: Record, path: Path | str, known_defenses: set[str] | None,
                            known_attacks: set[str] | None) -> list[str]:
    """What :func:`validate_record` checks after the schema: image indices, the entry name its
    defense, options and classifier give, labels against the dataset's, registered plug-ins. Sets
    ``record._labels_checked``."""
    from bench.zoo.labels import index_problems, label_problems

    problems = [f"{path}: {p}" for p in index_problems(record.dataset.name, record.dataset.sample_indices)]
    if known_defenses is None or record.defense.name in known_defenses:
        try:
            expected_entry = _entry_of(record.defense.name, json.dumps(record.defense.config, sort_keys=True),
                                       record.classifier, record.dataset.name, record.protocol)
        except BenchError as err:
            problems.append(f"{path}: protocol: {err}")
        else:
            if record.entry != expected_entry:
                problems.append(f"{path}: entry: {record.entry!r} is not the entry its defense, options and "
                                f"classifier name ({expected_entry!r})")
    wrong_labels, record._labels_checked = label_problems(record.dataset.name, record.dataset.sample_indices,
                                                          record.samples.label)
    problems += [f"{path}: {p}" for p in wrong_labels]
    if known_defenses is not None and record.defense.name not in known_defenses:
        problems.append(f"{path}: defense.name: unknown defense {record.defense.name!r} "
                        f"(valid: {', '.join(sorted(known_defenses))})")
    if known_attacks is not None and record.attack.name not in known_attacks:
        problems.append(f"{path}: attack.name: unknown attack {record.attack.name!r} "
                        f"(valid: {', '.join(sorted(known_attacks))})")
    return problems


def registry_names() -> tuple[set[str], set[str]]:
    return set(DEFENSES.names()), set(ATTACKS.names())


def load_record_file(path: Path, known: tuple[set[str], set[str]] | None = None,
                     defer_derivation: bool = False) -> Record:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(f"{path}: cannot read: {err}") from None
    return _record_from_text(text, path, known if known is not None else registry_names(), defer_derivation)


def _record_from_text(text: str, path: Path, known: tuple[set[str], set[str]], defer_derivation: bool) -> Record:
    defenses_known, attacks_known = known
    try:
        record = validate_record(text, path, defenses_known, attacks_known, defer_derivation)
    except RecordError as err:
        problem = _json_problem(text, path, str(err))
        if problem:
            raise RecordError(problem) from None
        raise
    record._text = text
    return record


def _json_problem(text: str, path: Path | str, message: str) -> str | None:
    """Where a text that pydantic's ``message`` calls invalid JSON breaks (pydantic does not say), else None."""
    if "Invalid JSON" not in message and "json_invalid" not in message:
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return f"{path}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
    return None


_NOT_RECORDS = frozenset({"literature", "sanity", "studies"})


def record_files(paths: list[Path]) -> list[Path]:
    """Every ``*.json`` record file under ``paths`` (files are taken as given), sorted per folder.
    Files in a ``literature`` folder are the literature track's, with their own schema
    (:func:`bench.publish.literature.validate_literature`), files in a ``sanity`` folder are
    attack sanity reports (:mod:`bench.publish.sanity`) and files in a ``studies`` folder study
    exports (:mod:`bench.publish.paper`); they are skipped."""
    files: list[Path] = []
    for path in paths:
        files.extend(_json_files_under(path) if path.is_dir() else [path])
    return files


def _json_files_under(root: Path) -> list[Path]:
    """``sorted(root.rglob("*.json"))`` without the folders of :data:`_NOT_RECORDS` (at any depth),
    in the same order (by path components) and, like ``rglob``, without following symlinked
    folders. By hand with ``os.scandir`` because ``rglob`` plus a per-file ``relative_to`` filter took
    a third of a second for 10,000 records, on the critical path of every site build."""
    found: list[tuple[str, ...]] = []
    pending: list[tuple[str, tuple[str, ...]]] = [(str(root), ())]
    while pending:
        folder, parts = pending.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except PermissionError:  # as rglob: an unreadable folder holds nothing
            continue
        for entry in entries:
            if entry.name.endswith(".json"):
                found.append(parts + (entry.name,))
            try:
                descend = entry.is_dir(follow_symlinks=False) and entry.name not in _NOT_RECORDS
            except OSError:
                descend = False
            if descend:
                pending.append((entry.path, parts + (entry.name,)))
    found.sort(key=lambda components: tuple(map(os.path.normcase, components)))  # pathlib's order
    return [root.joinpath(*components) for components in found]


def read_record_texts(files: list[Path]) -> tuple[list[tuple[Path, str]], list[str]]:
    """((file, text) pairs, error messages for the files that cannot be read as UTF-8). Each text is
    the file's bytes decoded, exactly (no newline translation: its SHA-256 is the file's, as
    ``bench verify --report`` computes it)."""
    texts, errors = [], []
    for file in files:
        try:
            texts.append((file, _read_utf8(file)))
        except (OSError, UnicodeDecodeError) as err:
            errors.append(f"{file}: cannot read: {err}")
    return texts, errors


def _read_utf8(file: Path) -> str:
    """The file's bytes as UTF-8, read unbuffered: ``Path.read_text`` builds a text wrapper per file,
    which took 60% of reading a 10,000-record board."""
    with open(file, "rb", buffering=0) as handle:
        return handle.readall().decode("utf-8")


def check_record_texts(texts: list[tuple[Path, str]]) -> tuple[list[tuple[Path, Record]], list[str]]:
    """Every check of :func:`validate_record` on each text; returns ((file, record) pairs of the
    valid ones, error messages): :func:`parse_unchecked`, then :func:`check_parsed`."""
    records, errors = parse_unchecked(texts)
    valid, problems = check_parsed(records)
    return valid, errors + problems


def parse_unchecked(texts: list[tuple[Path, str]]) -> tuple[list[tuple[Path, Record]], list[str]]:
    """The records as parsed by the schema's field types (and the nested models' validators) only,
    *without* the record-level checks of :func:`check_parsed` (shapes, summaries against outcomes,
    entry names, labels, registered plug-ins); returns ((file, record) pairs, the schema's error
    messages for the texts it rejects, as :func:`validate_record` words them). Nothing may be
    published from these records before :func:`check_parsed` has passed them: the site build runs
    it in a second process meanwhile (:func:`bench.publish.leaderboard.build_site`)."""
    from bench.zoo.labels import test_labels

    out, errors = [], []
    for file, text in texts:
        try:
            record = Record.model_validate_json(text, context={"unchecked": True})
        except ValidationError as err:
            message = "\n".join(_schema_problems(err, file))
            errors.append(_json_problem(text, file, message) or message)
            continue
        record._text = text
        record._labels_checked = test_labels(record.dataset.name) is not None  # as label_problems decides
        out.append((file, record))
    return out, errors


def check_parsed(records: list[tuple[Path, Record]]) -> tuple[list[tuple[Path, Record]], list[str]]:
    """Every check :func:`validate_record` makes beyond the schema, on records from
    :func:`parse_unchecked`: the record validator's shapes (:meth:`Record.check_shapes`), the
    indices, entry name, labels and plug-ins (as :func:`validate_record`), then the summaries of all
    of them against their outcomes at once (:func:`bench.publish.consistency.inconsistent`, the
    validator's derivation vectorised). Returns ((file, record) pairs of the valid ones, error
    messages worded as :func:`validate_record`'s)."""
    from bench.publish.consistency import inconsistent

    known_defenses, known_attacks = registry_names()
    passed, errors = [], []
    for file, record in records:
        try:
            record.check_shapes()
        except ValueError as err:  # as pydantic reports the record validator's ValueError
            errors.append("\n".join(f"{file}: <record>: {message}" for message in str(err).split("; ")))
            continue
        problems = _problems_beyond_schema(record, file, known_defenses, known_attacks)
        if problems:
            errors.append("\n".join(problems))
        else:
            passed.append((file, record))
    wrong = inconsistent([record for _, record in passed])
    for i in sorted(wrong):
        errors.append("\n".join(f"{passed[i][0]}: <record>: {problem}" for problem in wrong[i]))
    return [pair for i, pair in enumerate(passed) if i not in wrong], errors


def validate_paths(paths: list[Path]) -> tuple[list[tuple[Path, Record]], list[str]]:
    """Validate every record file under ``paths`` (:func:`record_files`); returns ((file, record)
    pairs, error messages in file order)."""
    files = record_files(paths)
    texts, errors = read_record_texts(files)
    records, problems = check_record_texts(texts)
    return records, in_file_order(errors + problems, files)


def in_file_order(messages: list[str], files: list[Path]) -> list[str]:
    """``messages`` ordered by the position in ``files`` of the file each names (its text before the
    first ": "), each file's messages in their own order; messages naming no listed file follow, in
    theirs. The checks run in passes (read, schema, record, summaries), so their messages come
    pass by pass; a reader wants them file by file."""
    position = {str(file): i for i, file in enumerate(files)}
    return sorted(messages, key=lambda message: position.get(message.partition(": ")[0], len(position)))


# -- export -------------------------------------------------------------------------------------

def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", text).strip("-")


def threat_label(norm: str, eps: float) -> str:
    """``linf-8-255`` for ε = 8/255, else ``l2-0.5`` / ``linf-0.25``."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and eps < 1 and norm == "linf":
        return f"{norm}-{round(k)}-255"
    return f"{norm}-{eps:g}"


def plain(value: Any) -> Any:
    """A config value as JSON gives it back: tuples (dataclass defaults) as lists (stored configs)."""
    return list(value) if isinstance(value, tuple) else value


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _non_default(config: dict[str, Any], defaults: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``key=value`` for the options that differ from the defaults; tuples (dataclass defaults)
    and lists (JSON-stored configs) compare as equal sequences."""
    return [f"{k}={_shown(config[k])}" for k in sorted(config)
            if k not in ignore and plain(config[k]) != plain(defaults.get(k))]


@functools.lru_cache(maxsize=256)
def _attack_defaults(name: str, protocol: str | None) -> dict[str, Any]:
    """An attack's default config under ``protocol`` (built once per pair: a site build labels
    every record's attack)."""
    import dataclasses

    from bench.core.config import build_config
    from bench.protocols import load_protocol

    budgets = load_protocol(protocol).attack_options(name) if protocol else {}
    return dataclasses.asdict(build_config(ATTACKS.get(name).config_cls, budgets))


def attack_label(name: str, config: dict[str, Any], protocol: str | None = None) -> str:
    """``pgd_eot`` or ``pgd_eot[eot=2,steps=2]``: the attack with the options that differ from its
    defaults under ``protocol`` (the threat model's norm, ε and step size are shown elsewhere)."""
    extra = _non_default(config, _attack_defaults(name, protocol), ignore=("norm", "eps", "step_size"))
    return f"{name}[{','.join(extra)}]" if extra else name


@functools.lru_cache(maxsize=4096)
def _entry_of(defense: str, config_json: str, classifier: str, dataset: str, protocol: str | None) -> str:
    """:func:`entry_key` for validation (cached: a board holds many records of each entry)."""
    return entry_key(defense, json.loads(config_json), classifier, dataset, protocol)


def entry_key(defense: str, config: dict[str, Any], classifier: str, dataset: str, protocol: str | None = None) -> str:
    """The leaderboard row a record belongs to: defense + options that differ from its defaults
    under ``protocol`` (the plug-in's defaults with the protocol's budgets over them; e.g. the toy
    protocol's nfe=20 is not an option of the entry) + classifier when it is not the dataset's
    default."""
    import dataclasses

    from bench.core.config import build_config
    from bench.protocols import load_protocol
    from bench.zoo.classifiers import DEFAULT_CLASSIFIERS

    config_cls = DEFENSES.get(defense).config_cls
    budgets = load_protocol(protocol).defense_options(defense) if protocol else {}
    defaults = dataclasses.asdict(build_config(config_cls, budgets))
    options = _non_default(config, defaults)
    if classifier and classifier != DEFAULT_CLASSIFIERS.get(dataset):
        options.append(f"classifier={classifier}")
    return f"{defense}[{','.join(options)}]" if options else defense


def record_from_run(run: Any) -> dict[str, Any]:
    """The record (a JSON-ready dict) of a complete stored run: its per-draw outcomes and every
    summary derived from them (:func:`bench.publish.derive.derive`)."""
    from bench.publish.derive import Outcomes, derive

    if run.status != "complete" or not run.metrics:
        raise RecordError(f"run {run.id} is {run.status}, not complete; finish it with `bench resume {run.id}`")
    if ":" in run.defense:
        raise RecordError(f"run {run.id} evaluated {run.defense}, a defense given as a Python object: records are "
                          "for registered defenses (register it as a plug-in to publish it)")
    rows = sorted(run.samples, key=lambda r: r.position)
    missing = [r.sample_index for r in rows if r.select_preds is None]
    if missing:
        raise RecordError(f"run {run.id} predates selection draws (samples {missing[:5]} have none), so its record "
                          "could not be checked or ranked; re-run it (`bench grid` with the same options)")
    defense_cls, attack_cls = DEFENSES.get(run.defense), ATTACKS.get(run.attack)
    infos = [r.attack_info or {} for r in rows]

    def per_sample(key: str) -> list[Any] | None:
        return [info[key] for info in infos] if rows and all(key in info for info in infos) else None

    preds = {name: [list(getattr(r, name)) for r in rows] for name in ("clean_preds", "adv_preds", "select_preds")}
    width = pred_width(run.dataset)
    samples = {
        "label": [r.label for r in rows],
        **{name: encode_preds(value, width) for name, value in preds.items()},
        "reported": per_sample("reported_correct"),
        "gradient_draws": per_sample("gradient_draws"),
        "forward_draws": per_sample("forward_draws"),
    }
    derived = derive(Outcomes.from_predictions(samples["label"], preds["clean_preds"], preds["adv_preds"],
                                               preds["select_preds"], samples["reported"],
                                               samples["gradient_draws"], samples["forward_draws"]))
    protocol = (run.runtime or {}).get("protocol")
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.id,
        "entry": entry_key(run.defense, run.defense_config, run.classifier, run.dataset, protocol),
        "defense": {"name": run.defense, "config": run.defense_config, "nfe": run.nfe, "paper": defense_cls.paper,
                    "diffusion_model": defense_cls.model_files.get(run.dataset, ""), "addt": defense_cls.addt},
        "attack": {"name": run.attack, "config": run.attack_config, "unreliable": attack_cls.unreliable},
        "setting": run.setting,
        "classifier": run.classifier,
        "dataset": {"name": run.dataset, "n_samples": run.n_samples, "sample_indices": list(run.sample_indices)},
        "threat_model": {"norm": run.norm, "eps": run.eps},
        "eval_draws": run.eval_draws,
        "clean": derived["clean"],
        "robust": derived["robust"],
        "attack_reported": derived.get("attack_reported"),
        "rob_m": derived["rob_m"],
        "cost": {"wall_seconds": run.wall_seconds, "attack_seconds": run.attack_seconds or 0.0, "device": run.device,
                 **derived.get("cost", {})},
        "seed": run.seed,
        "protocol": protocol,
        "git_commit": run.git_commit,
        "package_versions": run.package_versions,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "finished_at": run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
        "samples": {**{k: v for k, v in samples.items() if v is not None}, **derived["samples"]},
    }
    record["_attack_label"] = attack_label(run.attack, run.attack_config, protocol)
    return record


def dumps_record(value: Any, indent: int = 0) -> str:
    """JSON with one key per line but lists of numbers on one line (reviewable diffs, small files);
    a list of number lists (per-draw outcomes) has one sample per line."""
    pad = " " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dumps_record(v, indent + 1)}" for k, v in sorted(value.items())]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(pad + dumps_record(v, indent + 1) for v in value) + "\n" + " " * indent + "]"
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list) else json.dumps(value)


def record_path(root: Path, record: dict[str, Any]) -> Path:
    """``<root>/<dataset>/<threat>[/<protocol>]/<entry>__<attack>__<setting>[__seed<S>][__n<N>].json``:
    the seed and sample count are in the name when they differ from the protocol's, so records of
    other seeds or sizes never share a file with the track's."""
    from bench.protocols import load_protocol

    threat = threat_label(record["threat_model"]["norm"], record["threat_model"]["eps"])
    parts = [_slug(record["entry"]), _slug(record.pop("_attack_label", record["attack"]["name"])), _slug(record["setting"])]
    protocol = record.get("protocol")
    try:
        spec = load_protocol(protocol) if protocol else None
    except Exception:
        spec = None
    if record["seed"] != (spec.seed if spec is not None else 0):
        parts.append(f"seed{record['seed']}")
    n, indices = record["dataset"]["n_samples"], record["dataset"]["sample_indices"]
    if spec is not None and spec.n_samples is not None and indices != list(range(spec.n_samples)):
        parts.append(f"n{n}" if indices == list(range(n)) else f"n{n}-from{indices[0]}")
    folder = root / record["dataset"]["name"] / threat
    # records made under a protocol file live in its folder: results/toy/linf-0.25/toy/...; records of
    # the plug-ins' paper budgets (and older records, which name no protocol) stay directly in the threat folder
    return (folder / protocol if protocol and protocol != "paper" else folder) / ("__".join(parts) + ".json")


def export_run(run: Any, root: Path, replace: bool = False) -> Path:
    """Write the record of ``run`` under ``root`` atomically (validated first); returns its path.
    A file there that holds *another* run's record is kept unless ``replace``; the error names it."""
    record = record_from_run(run)
    path = record_path(root, record)
    validate_record(record, path, *registry_names())
    if path.exists() and not replace:
        try:
            existing = json.loads(path.read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError, AttributeError):
            existing = "<unreadable>"
        if existing != run.id:
            raise RecordError(f"{path} holds the record of run {existing}, not {run.id}; it was not replaced. "
                              f"Pass --replace to overwrite it, or export to another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps_record(record) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
