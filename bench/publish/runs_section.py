"""The "Runs" section of an entry page: one table row and one configuration block per record.

Written as Python string formatting rather than a Jinja template on purpose: at 10,000 records this
section is most of the site's HTML (about 55 escaped fields per record), and Jinja spent ~0.9 s of
CPU per 10,000-record build yielding and escaping them one by one, against ~0.25 s here. Every
text field still goes through ``markupsafe.escape`` (the same escaping as the templates' autoescape)
and JSON through Jinja's own ``htmlsafe_json_dumps`` (the templates' ``tojson``); the output is the
same bytes the template produced (``tests/test_leaderboard.py`` checks the escaping).
"""

from __future__ import annotations

from typing import Any

from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

_HEAD = ('<thead><tr><th>Dataset</th><th>Threat</th><th>Attack</th><th>Setting</th><th data-type="num">Clean %</th>'
         '<th data-type="num">Robust %</th><th data-type="num">Worst-of-K %</th><th data-type="num">Majority %</th>'
         '<th data-type="num">n</th><th data-type="num">K</th><th>Record</th></tr></thead>')

_VERDICT_NOTES = {
    "aa_rand_fixed": "<small>— the minimum of noisy M-draw estimates, reported on those same draws: biased low, and "
                     "its interval is not a valid confidence interval. The harness's re-score on fresh draws (the "
                     "table above) is the measurement.</small>\n",
    "aa_rand": "<small>— the original AutoAttack-Rand's one-draw verdict; it is <em>lower</em> than the fresh-noise "
               "re-score of the same inputs (the table above), because one lucky draw decides it.</small>\n",
}
_OWN_ESTIMATE = "<small>— the attack's own estimate on its own draws, not the harness's evaluation.</small>"


def pct(value: float | None) -> str:
    """A proportion as a percentage with one decimal (the templates' ``pct`` filter)."""
    return "" if value is None else f"{100 * value:.1f}"


def _e(value: Any) -> str:
    return str(escape(value))


def _json(value: Any) -> str:
    return str(htmlsafe_json_dumps(value, sort_keys=True))  # the templates' ``tojson`` (Jinja's default policy)


def _row(run: Any, path: str, label: str) -> str:
    c, r = run.clean.expected, run.robust
    unreliable = run.attack.unreliable
    row_class = ' class="unreliable"' if unreliable else ""
    return (
        f'<tr{row_class}>\n'
        f'  <td>{_e(run.dataset.name)}</td><td>{_e(run.threat_model.norm)} ε={run.threat_model.eps:.4g}</td>\n'
        f'  <td>{_e(label)}{" <small>(unreliable)</small>" if unreliable else ""}</td><td>{_e(run.setting)}</td>\n'
        f'  <td data-value="{c.acc}">{pct(c.acc)} <small>[{pct(c.ci_low)}, {pct(c.ci_high)}]</small></td>\n'
        f'  <td data-value="{r.expected.acc}">{pct(r.expected.acc)} <small>[{pct(r.expected.ci_low)}, '
        f'{pct(r.expected.ci_high)}]</small></td>\n'
        f'  <td data-value="{r.worst.acc}">{pct(r.worst.acc)}</td>\n'
        f'  <td data-value="{r.majority.acc}">{pct(r.majority.acc)}</td>\n'
        f'  <td data-value="{run.dataset.n_samples}">{run.dataset.n_samples}</td>'
        f'<td data-value="{run.eval_draws}">{run.eval_draws}</td>\n'
        f'  <td><a href="../records/{_e(path)}">JSON</a></td>\n'
        '</tr>\n'
    )


def _details(run: Any, path: str, label: str) -> str:
    indices = run.dataset.sample_indices
    versions = run.package_versions
    verdict = ""
    if run.attack_reported:
        note = _VERDICT_NOTES.get(run.attack.name, _OWN_ESTIMATE)
        verdict = f"<dt>Attack's own verdict</dt><dd>{pct(run.attack_reported.acc)} %\n{note}</dd>"
    return (
        '<details>\n'
        f'<summary>Run {_e(run.run_id)}: {_e(label)} / {_e(run.setting)} / {_e(run.dataset.name)}</summary>\n'
        '<dl>\n'
        f'  <dt>Defense config</dt><dd><code>{_json(run.defense.config)}</code></dd>\n'
        f'  <dt>Attack config</dt><dd><code>{_json(run.attack.config)}</code></dd>\n'
        f'  <dt>Classifier / seed</dt><dd>{_e(run.classifier)} / {run.seed}</dd>\n'
        f'  <dt>Samples</dt><dd>{run.dataset.n_samples} test images (indices {indices[0]}…{indices[-1]}), '
        f'K = {run.eval_draws} draws</dd>\n'
        f'  <dt>Git commit</dt><dd><code>{_e(run.git_commit)}</code></dd>\n'
        f'  <dt>Device and time</dt><dd>{_e(run.cost.device)}; wall {run.cost.wall_seconds:.1f} s, '
        f'attack {run.cost.attack_seconds:.1f} s; finished {_e(run.finished_at)}</dd>\n'
        f'  <dt>Packages</dt><dd>torch {_e(versions.get("torch"))}, diffusers {_e(versions.get("diffusers"))} '
        f'(all versions in the <a href="../records/{_e(path)}">record</a>)</dd>\n'
        f'{verdict}</dl>\n'
        '</details>\n'
    )


def runs_section(runs: list[tuple[Any, str, str]]) -> Markup:
    """The section's HTML for ``runs``: (record, path under ``records/``, attack label) triples, in
    the order shown (:class:`bench.publish.records.Record` fields)."""
    rows = "".join(_row(*run) for run in runs)
    details = "".join(_details(*run) for run in runs)
    return Markup(
        '<section class="runs">\n'
        f'<h2>Runs ({len(runs)})</h2>\n'
        '<table class="sortable">\n'
        f'{_HEAD}\n'
        '<tbody>\n'
        f'{rows}'
        '</tbody>\n'
        '</table>\n'
        '<h3>Configuration and reproducibility</h3>\n'
        f'{details}'
        '</section>'
    )
