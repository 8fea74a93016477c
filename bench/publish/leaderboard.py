"""``bench leaderboard build``: records -> SQLite (rebuilt each time) -> a static Jinja2 site.

The site works from ``file://`` and from GitHub Pages: relative links only, no CDN, no network
at view time. Tracks and ranking rules are :mod:`bench.publish.tracks` (coverage, per-sample worst
case over the ranking attacks, paired rank intervals); reported numbers from papers are a separate
literature track (:mod:`bench.publish.literature`), never ranked with the measured ones.
``aa_rand`` is shown struck through (it overestimates robustness) and DW settings are diagnostics
on the entry page, never used for ranking.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    Text,
    create_engine,
)
from sqlalchemy.orm import DeclarativeBase

from bench.core.defense import DEFENSES
from bench.core.errors import BenchError
from bench.core.provenance import PROJECT_ROOT
from bench.publish.ranking import RANK_RESAMPLES, RANK_SEED
from bench.publish.records import Record, attack_label, threat_label, validate_paths
from bench.publish.runs_section import pct, runs_section
from bench.publish.svg import Series, bar_chart, line_chart
from bench.publish.tracks import RankedEntry, Track, build_tracks

if TYPE_CHECKING:
    from bench.publish.forked import WorkCounter

log = logging.getLogger(__name__)
TEMPLATES = PROJECT_ROOT / "leaderboard" / "templates"
STATIC = PROJECT_ROOT / "leaderboard" / "static"
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "Tiny-ImageNet", "toy": "Toy suite (8x8 digits, CPU)"}


class _Base(DeclarativeBase):
    pass


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """One record flattened: the columns of :class:`RecordRow`, as a plain object (building 10,000
    ORM instances took most of a second of each site build, for attribute access only)."""

    path: str
    run_id: str
    entry: str
    defense: str
    attack: str
    attack_label: str
    unreliable: bool
    setting: str
    classifier: str
    dataset: str
    norm: str
    eps: float
    threat: str
    nfe: int
    n_samples: int
    clean_acc: float
    clean_ci_low: float
    clean_ci_high: float
    robust_acc: float
    robust_ci_low: float
    robust_ci_high: float
    attack_seconds: float
    device: str
    finished_at: str
    body: str

    @classmethod
    def of(cls, path: Path, r: Record) -> RecordSummary:
        return cls(
            path=str(path), run_id=r.run_id, entry=r.entry, defense=r.defense.name, attack=r.attack.name,
            attack_label=attack_label(r.attack.name, r.attack.config, r.protocol), unreliable=r.attack.unreliable,
            setting=r.setting, classifier=r.classifier, dataset=r.dataset.name, norm=r.threat_model.norm,
            eps=r.threat_model.eps, threat=threat_label(r.threat_model.norm, r.threat_model.eps), nfe=r.defense.nfe,
            n_samples=r.dataset.n_samples, clean_acc=r.clean.expected.acc, clean_ci_low=r.clean.expected.ci_low,
            clean_ci_high=r.clean.expected.ci_high, robust_acc=r.robust.expected.acc,
            robust_ci_low=r.robust.expected.ci_low, robust_ci_high=r.robust.expected.ci_high,
            attack_seconds=r.cost.attack_seconds, device=r.cost.device, finished_at=r.finished_at or r.created_at,
            body=r._text or r.model_dump_json(),
        )


# The database's columns are RecordSummary's fields (one list, not two): the SQL type of each follows
# from the field's annotation; ``path`` is the key and ``entry`` is indexed for queries by entry.
_SQL_TYPES: dict[str, Any] = {"str": String, "bool": Boolean, "float": Float, "int": Integer}


def _records_table() -> Any:
    import dataclasses

    from sqlalchemy import Column, Table

    columns = []
    for field in dataclasses.fields(RecordSummary):
        annotation = str(field.type)
        if field.name != "body" and annotation not in _SQL_TYPES:
            raise TypeError(f"RecordSummary.{field.name} is annotated {annotation!r}, which has no SQL column type "
                            f"(valid: {', '.join(sorted(_SQL_TYPES))}); add it to _SQL_TYPES")
        columns.append(Column(field.name, Text if field.name == "body" else _SQL_TYPES[annotation],
                              primary_key=field.name == "path", index=field.name == "entry", nullable=False))
    return Table("records", _Base.metadata, *columns)


class RecordRow(_Base):
    """One record, flattened for querying (the full JSON is kept in ``body``); its columns are the
    fields of :class:`RecordSummary`."""

    __table__ = _records_table()


def ingest(records: list[RecordSummary], database: Path) -> None:
    """(Re)create ``database`` holding exactly ``records`` (:func:`summaries`)."""
    import dataclasses

    from sqlalchemy import event

    if database.exists():
        database.unlink()
    engine = create_engine(f"sqlite:///{database}")
    event.listen(engine, "connect", _fresh_file_pragmas)
    _Base.metadata.create_all(engine)
    columns = [field.name for field in dataclasses.fields(RecordSummary)]  # = RecordRow's columns
    # the driver's own executemany on tuples: SQLAlchemy's executemany spent a third of the insert
    # turning 10,000 parameter dicts into the driver's form; the table and its schema are SQLAlchemy's
    connection = engine.raw_connection()
    try:
        if records:
            connection.cursor().executemany(
                f"INSERT INTO {RecordRow.__table__.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [tuple(getattr(r, c) for c in columns) for r in records])
        connection.commit()
    finally:
        connection.close()
    engine.dispose()


def _fresh_file_pragmas(connection: Any, _record: Any) -> None:
    """SQLite settings for a database written once, from scratch, into the build's staging folder:
    64 KiB pages (a record's JSON body, ~9 KB, fits one page instead of a chain of 4 KiB overflow
    pages) and no rollback journal or fsync (a build that fails deletes the whole staging folder, and
    the site goes live by renaming that folder, so SQLite's own crash safety buys nothing here).
    Together a 10,000-record database is written in a fifth of the time (0.7 -> 0.14 s)."""
    cursor = connection.cursor()
    for pragma in ("page_size = 65536", "journal_mode = OFF", "synchronous = OFF"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def summaries(records: list[tuple[Path, Record]]) -> list[RecordSummary]:
    """The records flattened, sorted by path (the order of the database's rows)."""
    return sorted((RecordSummary.of(path, r) for path, r in records), key=lambda row: row.path)


def paper_url(paper: str) -> str | None:
    """An arXiv link for the last ``arXiv:ID`` a paper string names (None if it names none)."""
    ids = re.findall(r"arXiv:(\d{4}\.\d{4,5})", paper or "")
    return f"https://arxiv.org/abs/{ids[-1]}" if ids else None


def tex_name(text: str) -> Any:
    """A name as the papers typeset it, from their LaTeX source: ``DP _{DDPM}`` -> DP<sub>DDPM</sub>
    (escaped first, so only the subscripts become markup)."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"\s*_\{([^}]*)\}", r"<sub>\1</sub>", str(escape(text or ""))))


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "-", text).strip("-") or "entry"


_parsed: dict[str, Record] = {}


def _register_parsed(pairs: list[tuple[Path, Record]], records_dir: Path) -> tuple[list[Path], list[Record], list[RecordSummary]]:
    """Make the parsed ``(file, record)`` pairs the records :func:`parsed` returns; returns their
    paths relative to ``records_dir``, the records and their rows (:func:`summaries`)."""
    paths = [file.relative_to(records_dir) for file, _ in pairs]
    records = [record for _, record in pairs]
    _parsed.clear()
    _parsed.update({str(path): record for path, record in zip(paths, records)})
    return paths, records, summaries(list(zip(paths, records)))


def parsed(row: RecordSummary) -> Record:
    """The validated record of ``row`` (parsed once, during validation)."""
    if row.path not in _parsed:
        _parsed[row.path] = Record.model_validate_json(row.body)
    return _parsed[row.path]


def _track_csv(track: Track) -> str:
    """The ranked rows, then the incomplete ones (rank empty), of one track."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "rank_low", "rank_high", "entry", "addt", "clean_acc", "clean_ci_low", "clean_ci_high",
                     "robust_acc", "robust_ci_low", "robust_ci_high", "n_samples",
                     *[f"{a}_robust_acc" for a in track.ranking_attacks], "attack_seconds_per_image", "status"])
    for e in track.ranked:
        writer.writerow([e.rank[0], e.rank[1], e.rank[2], e.entry, e.addt, *e.clean, *e.robust, e.n,
                         *[e.per_attack[a] for a in track.ranking_attacks], f"{e.cost_per_image:.4g}", "ranked"])
    for e in track.incomplete:
        writer.writerow(["", "", "", e.entry, e.addt, "", "", "", "", "", "", "",
                         *[("" if e.per_attack[a] is None else e.per_attack[a]) for a in track.ranking_attacks], "",
                         f"incomplete: {e.missing}"])
    return buffer.getvalue()


def _entry_plots(records: list[RecordSummary]) -> list[str]:
    """SVGs for an entry page, per dataset x threat model x protocol (so no two series share a
    label): clean vs robust per White-box attack, Rob(M) per attack, and pgd_eot robust accuracy per
    attacker-knowledge setting."""
    plots = []
    groups: dict[tuple[str, str, str], list[RecordSummary]] = defaultdict(list)
    for r in records:
        groups[(r.dataset, r.threat, parsed(r).protocol or "paper")].append(r)
    for (dataset, threat, protocol), group in sorted(groups.items()):
        where = f"{DATASET_TITLES.get(dataset, dataset)}, {threat}, protocol {protocol}"
        white = sorted((r for r in group if r.setting == "white"), key=lambda r: (r.attack_label, r.path))
        if white:
            bars: list[tuple[str, float, float | None, float | None]] = [
                ("clean", white[0].clean_acc, white[0].clean_ci_low, white[0].clean_ci_high)]
            bars += [(f"robust: {_unique_label(r, white)}", r.robust_acc, r.robust_ci_low, r.robust_ci_high)
                     for r in white]
            plots.append(bar_chart(bars, title=f"Clean vs robust, White-box ({where})",
                                   x_label="expected accuracy, 95% CI"))
            plots.append(_resubmission_chart(white, where))
        by_setting = sorted((r for r in group if r.attack == "pgd_eot"), key=lambda r: (r.setting, r.path))
        if len({r.setting for r in by_setting}) > 1:
            plots.append(bar_chart([(f"{r.setting} ({_unique_label(r, by_setting)})", r.robust_acc, r.robust_ci_low,
                                     r.robust_ci_high) for r in by_setting],
                                   title=f"pgd_eot robust per setting ({where})", x_label="expected accuracy, 95% CI"))
    return plots


def _unique_label(row: RecordSummary, rows: list[RecordSummary]) -> str:
    """The attack label, with the run's seed and size when another row shares the label."""
    same = [r for r in rows if r.attack_label == row.attack_label and r.setting == row.setting]
    if len(same) == 1:
        return row.attack_label
    record = parsed(row)
    return f"{row.attack_label}, seed {record.seed}, n={record.dataset.n_samples}, run {record.run_id[:6]}"


def _resubmission_chart(records: list[RecordSummary], where: str) -> str:
    """Rob(M) (accuracy under M independent resubmissions, 95% Wilson interval) per White-box
    attack: the record's stored curve, or derived from its per-sample outcomes for older records."""
    series = []
    for r in records:
        record = parsed(r)
        if record.rob_m:
            points, errors = [(p.m, p.acc) for p in record.rob_m], [(p.ci_low, p.ci_high) for p in record.rob_m]
        else:
            curve = _derived_rob_m(record)
            points, errors = [(p["m"], p["acc"]) for p in curve], [(p["ci_low"], p["ci_high"]) for p in curve]
        series.append(Series(_unique_label(r, records), points, errors))
    return line_chart(series, title=f"Resubmission risk Rob(M), White-box ({where})",
                      x_label="M (resubmissions of the same adversarial input)",
                      y_label="robust under all M", y_range=(0, 1))


def _derived_rob_m(record: Any) -> list[dict[str, float]]:
    """Rob(M) of a record that predates stored curves, from its per-sample outcomes (the same
    derivation and Wilson intervals as :mod:`bench.publish.derive`)."""
    from bench.publish.derive import derive

    return derive(record.outcomes())["rob_m"]


def _sweep_index(rows: list[RecordSummary]) -> dict[tuple[str, str, str], list[tuple[RecordSummary, Any]]]:
    """White-box pgd_eot records grouped by (defense, dataset, threat), with their EoT count."""
    index: dict[tuple[str, str, str], list[tuple[RecordSummary, Any]]] = defaultdict(list)
    for r in rows:
        if r.attack == "pgd_eot" and r.setting == "white":
            index[(r.defense, r.dataset, r.threat)].append((r, parsed(r).attack.config.get("eot")))
    return index


def _study_curves(entry_records: list[RecordSummary], sweeps: dict[tuple[str, str, str], list[tuple[RecordSummary, Any]]]) -> list[str]:
    """NFE and EoT curves for a defense when records of such sweeps exist (same dataset/threat)."""
    plots: list[str] = []
    if not entry_records:
        return plots
    first = entry_records[0]
    same = sweeps.get((first.defense, first.dataset, first.threat), [])
    by_nfe = {r.nfe: r for r, eot in same if eot == 10}
    if len(by_nfe) > 2:
        points = sorted(by_nfe.items())
        plots.append(line_chart(
            [Series("robust", [(n, r.robust_acc) for n, r in points], [(r.robust_ci_low, r.robust_ci_high) for _, r in points]),
             Series("clean", [(n, r.clean_acc) for n, r in points], dashed=True)],
            title=f"NFE study: {first.defense}", x_label="NFE", y_label="expected accuracy", log_x=True, y_range=(0, 1)))
    by_eot = {eot: r for r, eot in same if r.nfe == first.nfe and isinstance(eot, int)}
    if len(by_eot) > 2:
        points = sorted(by_eot.items())
        plots.append(line_chart(
            [Series("robust", [(e, r.robust_acc) for e, r in points], [(r.robust_ci_low, r.robust_ci_high) for _, r in points])],
            title=f"EoT study: {first.defense}", x_label="EoT samples", y_label="expected accuracy", log_x=True,
            y_range=(0, 1)))
    return plots


_card_cache: dict[str, dict[str, Any]] = {}


def _card(defense: str) -> dict[str, Any]:
    if defense not in _card_cache:
        _card_cache[defense] = DEFENSES.get(defense).card()
    return _card_cache[defense]


def _standing(tracks: list[Track]) -> dict[str, list[dict[str, Any]]]:
    """Per entry, its place in each track: ranked (rank interval, worst case, above / below) or
    incomplete (what is missing)."""
    standing: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for track in tracks:
        for e in track.ranked:
            standing[e.entry].append({"track": track, "ranked": e})
        for e in track.incomplete:
            standing[e.entry].append({"track": track, "incomplete": e})
    return standing


def _front_figure(track: Track) -> str:
    """Clean vs robust (per-sample worst case) accuracy, 95% intervals, one point per ranked entry."""
    from bench.publish.svg import Point, scatter_chart

    points = [Point(e.entry, e.clean[0], e.robust[0], (e.clean[1], e.clean[2]), (e.robust[1], e.robust[2]), e.addt)
              for e in track.ranked]
    return scatter_chart(points, title=f"Clean vs robust accuracy, ranked entries ({track.title}); ADDT in red",
                         x_label="clean expected accuracy, 95% CI", y_label="robust, per-sample worst case")


def _worst_case_chart(e: RankedEntry, track: Track) -> str:
    curve = e.rob_m
    return line_chart([Series("worst case over " + ", ".join(track.ranking_attacks),
                              [(p["m"], p["acc"]) for p in curve], [(p["ci_low"], p["ci_high"]) for p in curve])],
                      title=f"Rob(M), per-sample worst case over the ranking attacks ({track.title})",
                      x_label="M (resubmissions of the same adversarial input)", y_label="robust under all M",
                      y_range=(0, 1))


def _render_entries(env: Any, rows: list[RecordSummary], tracks: list[Track], folder: Path, built_at: str,
                    positions: Iterable[int] | None = None) -> int:
    """One page per entry (card, standing per track, runs, plots) into ``folder``: every entry, or
    only those at ``positions`` in name order (drawn from a :class:`bench.publish.forked.WorkCounter`
    when two processes share the pages). Returns the pages written."""
    by_entry: dict[str, list[RecordSummary]] = defaultdict(list)
    for row in rows:
        by_entry[row.entry].append(row)
    entry_template = env.get_template("entry.html")
    sweeps = _sweep_index(rows)
    standing = _standing(tracks)
    names = sorted(by_entry)
    written = 0
    for position in range(len(names)) if positions is None else positions:
        entry = names[position]
        written += 1
        entry_rows = by_entry[entry]
        entry_rows.sort(key=lambda r: (r.dataset, r.threat, r.attack_label, r.setting, r.path))
        places = standing.get(entry, [])
        plots = [_worst_case_chart(p["ranked"], p["track"]) for p in places if "ranked" in p and p["ranked"].rob_m]
        plots += _entry_plots(entry_rows) + _study_curves(entry_rows, sweeps) + _budget_curves(entry_rows)
        runs = [(parsed(r), r.path, r.attack_label) for r in entry_rows]
        (folder / f"{slugify(entry)}.html").write_text(entry_template.render(
            entry=entry, card=_card(entry_rows[0].defense), runs_section=runs_section(runs), plots=plots,
            built_at=built_at, root="..",
            places=places, slug=slugify, budgets=_track_budgets(entry_rows, tracks)), encoding="utf-8")
    return written


def _track_budgets(entry_rows: list[RecordSummary], tracks: list[Track]) -> list[dict[str, Any]]:
    """Per track the entry has records on: the protocol's budgets for its defense and the NFE its
    records ran at (the card's own NFE is the plug-in's paper default)."""
    out = []
    for track in tracks:
        paths = track.record_paths
        rows = [r for r in entry_rows if r.path in paths]
        if not rows:
            continue
        try:
            options = track.protocol.defense_options(rows[0].defense)
        except BenchError:
            options = {}
        out.append({"track": track.title, "options": options, "nfe": sorted({r.nfe for r in rows})})
    return out


def _budget_curves(entry_records: list[RecordSummary]) -> list[str]:
    """Robust accuracy against attack cost (gradient draws per image) when an entry has White-box
    records of one attack at several budgets (``bench study budget``)."""
    plots = []
    groups: dict[tuple[str, str, str], list[tuple[float, RecordSummary]]] = defaultdict(list)
    for r in entry_records:
        cost = parsed(r).cost.gradient_draws_per_sample
        if r.setting == "white" and cost:
            groups[(r.dataset, r.threat, r.attack)].append((cost, r))
    for (dataset, threat, attack), points in sorted(groups.items()):
        by_cost = {c: r for c, r in sorted(points, key=lambda p: (p[0], p[1].robust_acc))}
        if len(by_cost) < 3:
            continue
        pts = sorted(by_cost.items())
        plots.append(line_chart(
            [Series(attack, [(c, r.robust_acc) for c, r in pts], [(r.robust_ci_low, r.robust_ci_high) for _, r in pts])],
            title=f"Budget curve: {attack} ({DATASET_TITLES.get(dataset, dataset)}, {threat})",
            x_label="gradient draws per image", y_label="expected robust accuracy", log_x=True, y_range=(0, 1)))
    return plots


def _built_at(records: list[Record]) -> str:
    """The newest record's finish time: the site depends only on its inputs (byte-identical rebuilds)."""
    stamps = sorted((r.finished_at or r.created_at) for r in records)
    return (stamps[-1].replace("T", " ") + " (newest record)") if stamps else "no records"


def load_tracks(records_dir: Path) -> list[Track]:
    """The tracks of the records under ``records_dir``, ranked (no site is written)."""
    pairs, errors = validate_paths([records_dir]) if records_dir.exists() else ([], [])
    if errors:
        raise BenchError(f"{len(errors)} invalid record(s):\n" + "\n".join(errors))
    _, _, rows = _register_parsed(pairs, records_dir)
    return build_tracks(rows, parsed, DATASET_TITLES)


def track_markdown(track: Track) -> str:
    """A track (from :func:`load_tracks`) as the README's Markdown table, with its overestimate marks
    (:func:`bench.publish.overestimates.overestimates`)."""
    from bench.publish.overestimates import overestimates
    from bench.publish.tracks import markdown_table

    return markdown_table(track, overestimates(track, parsed))


@dataclass(frozen=True)
class Badge:
    """Whether a ranked entry's records were re-run by CI (``bench verify --report``)."""

    kind: str  # "verified" | "disagrees" | "unverified"
    text: str
    detail: str


def load_verifications(reports: list[Path]) -> dict[str, dict[str, Any]]:
    """``{record file SHA-256: what verify found}`` from ``bench verify --report`` files. Keyed by
    the file's content, so a record edited after it was verified has no badge."""
    found: dict[str, dict[str, Any]] = {}
    for report in reports:
        try:
            data = json.loads(report.read_text(encoding="utf-8"))
            for item in data["records"]:
                found[str(item["sha256"])] = {**item, "verifier": data.get("verifier", {})}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise BenchError(f"--verification {report}: not a `bench verify --report` file ({err})") from None
    return found


def _badge(entry: RankedEntry, verified: dict[str, dict[str, Any]], digests: dict[str, str]) -> Badge:
    found = [verified.get(digests.get(r.path, "")) for r in entry.records.values()]
    if not found or any(f is None for f in found):
        return Badge("unverified", "not re-run by CI",
                     "no CI re-run of these exact record files (bench verify --report)")
    identical, checked = sum(f["identical"] for f in found), sum(f["checked"] for f in found)
    kind = "verified" if identical == checked else "disagrees"
    commits = sorted({f["verifier"].get("git_commit") or "?" for f in found})
    return Badge(kind, f"CI re-ran {checked}: {identical} identical",
                 f"samples re-run from the records' configs and seeds at commit {', '.join(c[:10] for c in commits)}")


SITE_MARKER = ".bench-site"


def _ours_or_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and (not any(folder.iterdir()) or (folder / SITE_MARKER).is_file()))


def _output_folders(out: Path, records_dir: Path) -> tuple[Path, Path]:
    """(out, staging) after the output-folder rule: the build writes only into a folder that does
    not exist, is empty, or carries the marker file of an earlier build, and never into or around
    the records, the working directory or the project. Anything else is refused, naming the folder,
    with nothing changed."""
    out, records = out.expanduser().resolve(), records_dir.expanduser().resolve()
    protected = {Path.cwd().resolve(), PROJECT_ROOT.resolve(), Path.home().resolve(), Path(out.anchor)}
    if out in protected or out == records or out in records.parents or records in out.parents:
        raise BenchError(f"--out {out} would hold or replace the records, the working directory or the project; "
                         "choose a folder of its own, e.g. leaderboard/site")
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file; choose a folder (nothing was changed)")
    if not _ours_or_empty(out):
        raise BenchError(f"--out {out} holds files that `bench leaderboard build` did not write (no {SITE_MARKER} "
                         "marker); nothing was changed. Choose another folder, or empty it yourself.")
    staging = out.with_name(out.name + ".building")
    previous = out.with_name(out.name + ".previous")
    for scratch in (staging, previous):
        if scratch.exists():
            if not _ours_or_empty(scratch):
                raise BenchError(f"{scratch} exists and was not made by `bench leaderboard build`; move it away")
            shutil.rmtree(scratch)
    staging.mkdir(parents=True)
    (staging / SITE_MARKER).write_text("made by `bench leaderboard build`; it replaces this folder on the next build\n",
                                       encoding="utf-8")
    return out, staging


def build_site(records_dir: Path, out: Path, verification: list[Path] | None = None,
               processes: int = 2) -> dict[str, Any]:
    """Validate and ingest every record under ``records_dir`` and render the site into ``out``
    (:func:`_build_site`), with Python's cyclic garbage collector paused: a build holds tens of
    thousands of parsed records, and each collection re-traverses them all (a fifth of a 10k build).
    When two processes build, each keeps its BLAS to one thread: BLAS's own threads (one per core)
    in both processes fought over the two cores and slowed the bootstrap products by a fifth."""
    import contextlib
    import gc

    from threadpoolctl import threadpool_limits

    paused = gc.isenabled()
    gc.disable()
    try:
        with threadpool_limits(limits=1, user_api="blas") if processes > 1 else contextlib.nullcontext():
            return _build_site(records_dir, out, verification, processes)
    finally:
        if paused:
            gc.enable()


def _build_site(records_dir: Path, out: Path, verification: list[Path] | None = None,
                processes: int = 2) -> dict[str, Any]:
    """Validate and ingest every record under ``records_dir`` (the literature track's records
    under ``records_dir / literature`` by their own schema) and render the site into ``out``.
    ``verification``: ``bench verify --report`` files whose re-runs earn the ranked rows a
    "re-run by CI" badge. Raises :class:`BenchError` listing every invalid record (nothing is
    published then).

    Three processes share the two cores (:mod:`bench.publish.forked`): this one reads the
    record files, parses them by the schema (:func:`bench.publish.records.parse_unchecked`) and forks
    a checking child, which runs every further check on the same parsed records
    (:func:`bench.publish.records.check_parsed`, the same checks as ``bench validate``) and then
    matches the paper's tables and figures to their re-runs, while this one ranks. A page child then
    starts on the entry pages, which this process joins after writing the downloads, computing the
    protocol effects and, once the check has passed, rendering the site-wide pages; both draw entry
    pages from one shared counter. The site goes live only after the check reports no invalid record
    (otherwise the staging folder is deleted and the errors raised).
    ``processes=1`` does the same work in this process alone (the same files)."""
    from bench.publish.forked import Forked, WorkCounter, can_fork
    from bench.publish.forked import start as start_forked
    from bench.publish.literature import LITERATURE_DIR, validate_literature
    from bench.publish.records import parse_unchecked, read_record_texts, record_files

    started = time.perf_counter()
    phases: dict[str, float] = {}
    mark = _phase_timer(phases)
    files = record_files([records_dir]) if records_dir.exists() else []
    texts, errors = read_record_texts(files)
    alone = processes < 2 or not can_fork()
    pairs, schema_errors = parse_unchecked(texts)
    errors += schema_errors
    # Forked after the one parse: the child checks the records it shares copy-on-write with this
    # process (each process's reference-count writes copy the pages they touch, which costs less
    # than a second parse in the child did), then matches the paper's tables to their re-runs.
    check = start_forked("record check", _check_and_compare, pairs, records_dir, inline=alone)
    mark("reading and parsing")
    checked: list[str] | None = None
    staging: Path | None = None
    pages: Forked[int] | None = None
    try:
        literature, literature_errors = validate_literature(records_dir / LITERATURE_DIR)
        errors += literature_errors
        if errors:
            checked = check.result().errors
            raise _invalid(errors + checked, files)
        out, staging = _output_folders(out, records_dir)
        site = _SiteInputs.assemble(records_dir, pairs, literature, staging, verification, mark)
        if alone and check.result().errors:  # checked inline already: render nothing
            raise _invalid(checked := check.result().errors, files)
        # The entry pages need none of the check's results: a second child starts on them now, and
        # this process joins it after the downloads and the protocol effects, rendering the site-wide
        # pages in between once the check has reported (nothing goes live before it has passed).
        counter = WorkCounter(len({row.entry for row in site.rows}))
        pages = start_forked("page rendering", site.render_entry_pages, counter, inline=alone)
        site.write_downloads()
        mark("downloads")
        site.add_effects()
        mark("protocol effects")

        waited: list[float] = []

        def site_pages() -> None:
            nonlocal checked
            since = time.perf_counter()
            report = check.result()
            waited.append(time.perf_counter() - since)
            checked = report.errors
            if checked:
                raise _invalid(checked, files)
            site.add_check_results(report)
            site.render_site_pages()

        entries = site.render_entry_pages(_drawn_until(counter, check.ready, site_pages))
        entries += pages.result()
        mark("pages, both processes")
        phases["of which waiting for the record check"] = sum(waited)
    except BaseException as failure:
        if pages is not None:
            pages.cancel()
        if staging is not None and staging.exists():
            shutil.rmtree(staging)
        if checked is None and not isinstance(failure, Exception):  # e.g. Ctrl-C: stop the child too
            check.cancel()
        elif checked is None:  # this process failed first: an invalid record is the likelier cause
            try:
                checked = check.result().errors
            except Exception:
                checked = []
            if checked:
                raise _invalid(checked, files) from None
        raise
    if out.exists():
        previous = out.with_name(out.name + ".previous")
        out.replace(previous)
        staging.replace(out)
        shutil.rmtree(previous)
    else:
        staging.replace(out)
    mark("publish")
    return {"records": len(site.rows), "entries": entries, "tables": len(site.tracks), "literature": len(literature),
            "seconds": time.perf_counter() - started, "out": str(out), "phases": phases}


def _drawn_until(counter: WorkCounter, ready: Callable[[], bool], then: Callable[[], None]) -> Iterator[int]:
    """The positions this process draws from ``counter``, calling ``then()`` once: between two
    chunks as soon as ``ready()``, else after the last."""
    pending = True
    for chunk in iter(counter.take, range(0)):
        if pending and ready():
            pending = False
            then()
        yield from chunk
    if pending:
        then()


def _invalid(errors: list[str], files: list[Path]) -> BenchError:
    """The build's error for invalid records: their messages file by file (in the order of ``files``)."""
    from bench.publish.records import in_file_order

    listed = "\n".join(in_file_order(errors, files))
    return BenchError(f"{len(errors)} invalid record(s); the site was not built:\n{listed}")


@dataclass(frozen=True)
class _CheckReport:
    """What the checking process sends back: every invalid record's messages and, when there are
    none, the paper's tables beside their toy re-runs and the figure re-runs
    (:mod:`bench.publish.paper`), which only the site-wide pages show."""

    errors: list[str]
    tables: list[Any] = field(default_factory=list)
    reruns: list[Any] = field(default_factory=list)


def _check_and_compare(pairs: list[tuple[Path, Record]], records_dir: Path) -> _CheckReport:
    """The checking process's share of a build: every record check beyond the schema on the parsed
    records (:func:`bench.publish.records.check_parsed`), then, if all pass, the paper's table and
    figure re-runs from them, while the first process ranks and the entry pages are rendered."""
    from bench.publish.paper import paper_reruns, table_reruns
    from bench.publish.records import check_parsed

    records, errors = check_parsed(pairs)
    if errors:
        return _CheckReport(errors)
    toy = [(file, record) for file, record in records if record.dataset.name == "toy"]
    return _CheckReport([], table_reruns(toy, root=records_dir), paper_reruns(records_dir))


@dataclass
class _SiteInputs:
    """Everything the pages are rendered from, computed once before the pages are split between
    two processes."""

    records_dir: Path
    paths: list[Path]
    rows: list[RecordSummary]
    tracks: list[Track]
    env: Any
    staging: Path
    built_at: str
    context: dict[str, Any]

    @classmethod
    def assemble(cls, records_dir: Path, pairs: list[tuple[Path, Record]], literature: list[Any], staging: Path,
                 verification: list[Path] | None, mark: Any) -> _SiteInputs:
        import hashlib

        from jinja2 import Environment, FileSystemLoader, select_autoescape

        from bench.publish.literature import literature_tables
        from bench.publish.overestimates import overestimates
        from bench.publish.sanity import load_reports

        (staging / "entries").mkdir(parents=True)
        (staging / "tables").mkdir()
        paths, records, rows = _register_parsed(pairs, records_dir)  # leaderboard.sqlite is written with the pages
        mark("ingest")
        tracks = build_tracks(rows, parsed, DATASET_TITLES)
        mark("ranking")
        env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True)
        env.filters["pct"] = pct
        env.filters["paper_url"] = paper_url
        env.filters["tex_name"] = tex_name
        env.filters["or_not_stated"] = lambda v: "not stated" if v in (None, "", "?", "unknown") else v
        verified = load_verifications(list(verification or []))
        digests = {str(path): hashlib.sha256((record._text or "").encode("utf-8")).hexdigest()
                   for path, record in zip(paths, records)} if verified else {}
        env.globals["verification"] = lambda entry: _badge(entry, verified, digests)
        env.globals["slug"] = slugify
        for track in tracks:
            (staging / "tables" / f"{track.table_id}.csv").write_text(_track_csv(track), encoding="utf-8")
        flagged = {track.table_id: overestimates(track, parsed) for track in tracks}
        mark("overestimates")
        env.globals["overestimates"] = lambda track, entry: flagged[track.table_id].get(entry, [])
        sanity = load_reports(records_dir)
        env.globals["sanity_for"] = lambda entry, attack=None: [
            r for r in sanity if r.defense == entry and (attack is None or r.attack.split("[")[0] == attack)]
        context = {"tracks": tracks, "literature": literature_tables(literature), "n_records": len(rows),
                   "figures": {t.table_id: _front_figure(t) for t in tracks if t.ranked}}
        mark("front-page figures")
        return cls(records_dir, paths, rows, tracks, env, staging, _built_at(records), context)

    def add_effects(self) -> None:
        """The protocol effects (:class:`bench.publish.effects.Effect`: approximate protocols against
        exact, paired), which only the site-wide pages show."""
        from bench.publish.effects import literature_effects, protocol_effects

        effects = protocol_effects([(row.path, parsed(row)) for row in self.rows])  # rows are in path order
        self.context["effects"] = effects
        self.env.globals["toy_effects"] = lambda record, row: literature_effects(
            effects, record.bench_defense, row.protocol.gradient, row.protocol.attack)

    def add_check_results(self, report: _CheckReport) -> None:
        """What the checking process computed from the records: the paper's table and figure re-runs."""
        self.context.update(tables=report.tables, reruns=report.reruns)

    def render_site_pages(self) -> None:
        """The front, metrics, submit, effects and paper pages (after :meth:`add_check_results`)."""
        common = {"built_at": self.built_at, "root": ".", "rank_resamples": RANK_RESAMPLES, "rank_seed": RANK_SEED}
        for page in ("index", "metrics", "submit", "effects", "paper"):
            (self.staging / f"{page}.html").write_text(
                self.env.get_template(f"{page}.html").render(**common, **self.context), encoding="utf-8")

    def render_entry_pages(self, positions: Iterable[int]) -> int:
        """The entry pages at ``positions`` (in name order), e.g. those this process draws from a
        :class:`bench.publish.forked.WorkCounter` (both processes draw until none are left, so
        whichever has less else to do renders more: no fixed split to tune per machine or board);
        returns how many it wrote."""
        return _render_entries(self.env, self.rows, self.tracks, self.staging / "entries", self.built_at, positions)

    def write_downloads(self) -> None:
        """The stylesheet, the SQLite database and the downloadable records, exactly the validated files."""
        ingest(self.rows, self.staging / "leaderboard.sqlite")
        shutil.copytree(STATIC, self.staging / "assets")
        # string paths and one mkdir per folder: 10,000 pathlib joins and mkdir calls took half a second
        source_root, target_root = str(self.records_dir), str(self.staging / "records")
        made: set[str] = set()
        for path in map(str, self.paths):
            source, target = os.path.join(source_root, path), os.path.join(target_root, path)
            folder = os.path.dirname(target)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            try:
                os.link(source, target)  # same filesystem: no copy (records are immutable inputs)
            except OSError:
                shutil.copyfile(source, target)
        (self.staging / "records").mkdir(exist_ok=True)
        (self.staging / "records" / "index.json").write_text(json.dumps([str(p) for p in self.paths], indent=1),
                                                             encoding="utf-8")


def _phase_timer(phases: dict[str, float]) -> Any:
    """``mark(name)`` stores the seconds since the previous mark under ``name`` (the build's
    profile, printed by ``bench perf --leaderboard``)."""
    last = [time.perf_counter()]

    def mark(name: str) -> None:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - last[0]
        last[0] = now

    return mark
