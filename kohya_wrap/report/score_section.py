"""The report's score section, from RUN_DIR/score.json (no identity model needed to render it).

score_section(doc) charts likeness and the shares of samples that are the person (matches) and
that copy a training photo (copies) against the step, marks the recommended checkpoint, and
tabulates every checkpoint; report is kohya_wrap.score.load_score(run_dir), None when not scored.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from kohya_wrap.report.charts import Series, line_chart
from kohya_wrap.score.records import CheckpointScore, ScoreReport

# The report's stylesheet does not know these series; the section brings its own rules.
_STYLE = (
    "<style>svg .likeness{fill:none;stroke:#1f5fa8;stroke-width:2}"
    "svg .matches{fill:none;stroke:#16794a;stroke-width:1.5}"
    "svg .copies{fill:none;stroke:#b42318;stroke-width:1.5}svg .val{fill:none;stroke:#6b3fa0;stroke-width:1.5}"
    "#score-table tr.recommended td{background:#eaf6ee;font-weight:600}</style>"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(part: int, whole: int) -> float:
    return part / whole if whole > 0 else math.nan


def score_section(report: ScoreReport | None) -> str:
    if report is None:
        return (
            '<h2>Score</h2><p id="no-score">Not scored: <code>kohya-wrap score RUN_DIR</code> rates each '
            "checkpoint's samples against the training photos (needs <code>pip install "
            "'kohya-wrap[score]'</code>).</p>"
        )
    model = report.model
    return "".join(
        [
            "<h2>Score</h2>",
            _STYLE,
            _recommended(report),
            *_charts(report.checkpoints),
            _table(report),
            f'<p class="sub">Identity model {_e(model.id or "?")}; a sample is the person below distance '
            f"{_e(model.same_person_distance)}; likeness = {_e(model.likeness)}. "
            "See docs/score.md.</p>",
        ]
    )


def _recommended(report: ScoreReport) -> str:
    rec = report.recommended
    if rec is None:
        return f'<p id="score-recommended" data-step="">No checkpoint recommended: {_e(report.reason)}</p>'
    return (
        f'<p id="score-recommended" data-step="{_e(rec.step)}">Recommended: <b>step {_e(rec.step)}</b>'
        f"{' (' + _e(rec.checkpoint) + ')' if rec.checkpoint else ''}. "
        f"{_e(report.reason)}</p>"
    )


def _charts(checkpoints: Sequence[CheckpointScore]) -> list[str]:
    """The likeness chart with its legend, and the validation loss chart where sd-scripts measured one."""
    out = []
    xs = [float(c.step) for c in checkpoints]
    likeness = [c.likeness if c.likeness is not None else math.nan for c in checkpoints]
    chart = line_chart(
        [
            Series("likeness", "score-likeness", xs, likeness),
            Series("matches", "score-matches", xs, [_share(c.matches, c.samples) for c in checkpoints]),
            Series("copies", "score-copies", xs, [_share(c.copies, c.samples) for c in checkpoints]),
        ],
        svg_id="score-chart",
        title="likeness, share of samples that are the person, share that copy a photo",
        x_label="step",
        height=240,
    )
    if chart:
        out.append(
            '<p class="legend"><span><i class="sw" style="background:#1f5fa8"></i>likeness (0..1)</span>'
            '<span><i class="sw" style="background:#16794a"></i>matches / samples</span>'
            '<span><i class="sw" style="background:#b42318"></i>copies / samples</span></p>'
        )
        out.append(chart)
    val = [(float(c.step), c.validation_loss) for c in checkpoints if c.validation_loss is not None]
    if val:
        out.append(
            line_chart(
                [Series("val", "score-validation", [s for s, _ in val], [v for _, v in val])],
                svg_id="validation-chart",
                title="validation loss (sd-scripts, held-out images)",
                x_label="step",
                height=200,
            )
        )
    return out


def _table(report: ScoreReport) -> str:
    best = report.recommended.step if report.recommended is not None else None
    rows = [
        "<tr><th>step</th><th>samples</th><th>faces</th><th>likeness</th><th>matches</th><th>copies</th>"
        "<th>variety</th><th>validation loss</th><th>checkpoint</th></tr>"
    ]
    for c in report.checkpoints:
        mark = ' class="recommended"' if c.step == best else ""
        rows.append(
            f'<tr{mark} data-step="{_e(c.step)}"><td>{_e(c.step)}</td><td>{_e(c.samples)}</td>'
            f"<td>{_e(c.faces)}</td><td>{_num(c.likeness)}</td><td>{_e(c.matches)}</td>"
            f"<td>{_e(c.copies)}</td><td>{_num(c.variety)}</td>"
            f"<td>{_num(c.validation_loss, 4)}</td><td>{_e(c.checkpoint or '-')}</td></tr>"
        )
    return f'<table id="score-table">{"".join(rows)}</table>'
