"""The report's score section, from RUN_DIR/score.json (no identity model needed to render it).

score_section(doc) charts likeness and the shares of samples that are the person (matches) and
that copy a training photo (copies) against the step, marks the recommended checkpoint, and
tabulates every checkpoint; doc is kohya_wrap.score.load_score(run_dir), None when not scored.
"""

from __future__ import annotations

import html
import math
from typing import Any

from kohya_wrap.report.charts import Series, line_chart

# The report's stylesheet does not know these series; the section brings its own rules.
_STYLE = (
    "<style>svg .likeness{fill:none;stroke:#1f5fa8;stroke-width:2}"
    "svg .matches{fill:none;stroke:#16794a;stroke-width:1.5}"
    "svg .copies{fill:none;stroke:#b42318;stroke-width:1.5}svg .val{fill:none;stroke:#6b3fa0;stroke-width:1.5}"
    "#score-table tr.recommended td{background:#eaf6ee;font-weight:600}</style>"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 2) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.{digits}f}"


def _share(part: Any, whole: Any) -> float:
    return part / whole if isinstance(part, int) and isinstance(whole, int) and whole > 0 else math.nan


def score_section(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return (
            '<h2>Score</h2><p id="no-score">Not scored: <code>kohya-wrap score RUN_DIR</code> rates each '
            "checkpoint's samples against the training photos (needs <code>pip install "
            "'kohya-wrap[score]'</code>).</p>"
        )
    checkpoints = [c for c in doc.get("checkpoints", []) if isinstance(c, dict) and isinstance(c.get("step"), int)]
    rec = doc.get("recommended") if isinstance(doc.get("recommended"), dict) else None
    best = rec.get("step") if rec else None
    return "".join(
        [
            "<h2>Score</h2>",
            _STYLE,
            _recommended(doc, rec, best),
            _score_chart(checkpoints),
            _validation_chart(checkpoints),
            _score_table(checkpoints, best),
            _model_note(doc),
        ]
    )


def _recommended(doc: dict[str, Any], rec: dict[str, Any] | None, best: Any) -> str:
    if best is None:
        return f'<p id="score-recommended" data-step="">No checkpoint recommended: {_e(doc.get("reason", ""))}</p>'
    return (
        f'<p id="score-recommended" data-step="{_e(best)}">Recommended: <b>step {_e(best)}</b>'
        f"{' (' + _e(rec.get('checkpoint')) + ')' if rec and rec.get('checkpoint') else ''}. "
        f"{_e(doc.get('reason', ''))}</p>"
    )


def _score_chart(checkpoints: list[dict[str, Any]]) -> str:
    """Likeness, and the shares of samples that are the person and that copy a photo, against the step."""
    xs = [float(c["step"]) for c in checkpoints]
    likeness = [float(c["likeness"]) if isinstance(c.get("likeness"), (int, float)) else math.nan for c in checkpoints]
    chart = line_chart(
        [
            Series("likeness", "score-likeness", xs, likeness),
            Series("matches", "score-matches", xs, [_share(c.get("matches"), c.get("samples")) for c in checkpoints]),
            Series("copies", "score-copies", xs, [_share(c.get("copies"), c.get("samples")) for c in checkpoints]),
        ],
        svg_id="score-chart",
        title="likeness, share of samples that are the person, share that copy a photo",
        x_label="step",
        height=240,
    )
    if not chart:
        return ""
    return (
        '<p class="legend"><span><i class="sw" style="background:#1f5fa8"></i>likeness (0..1)</span>'
        '<span><i class="sw" style="background:#16794a"></i>matches / samples</span>'
        '<span><i class="sw" style="background:#b42318"></i>copies / samples</span></p>'
    ) + chart


def _validation_chart(checkpoints: list[dict[str, Any]]) -> str:
    val = [
        (float(c["step"]), float(c["validation_loss"]))
        for c in checkpoints
        if isinstance(c.get("validation_loss"), (int, float))
    ]
    if not val:
        return ""
    return line_chart(
        [Series("val", "score-validation", [s for s, _ in val], [v for _, v in val])],
        svg_id="validation-chart",
        title="validation loss (sd-scripts, held-out images)",
        x_label="step",
        height=200,
    )


def _score_table(checkpoints: list[dict[str, Any]], best: Any) -> str:
    rows = [
        "<tr><th>step</th><th>samples</th><th>faces</th><th>likeness</th><th>matches</th><th>copies</th>"
        "<th>variety</th><th>validation loss</th><th>checkpoint</th></tr>"
    ]
    for c in checkpoints:
        mark = ' class="recommended"' if c["step"] == best else ""
        rows.append(
            f'<tr{mark} data-step="{_e(c["step"])}"><td>{_e(c["step"])}</td><td>{_e(c.get("samples"))}</td>'
            f"<td>{_e(c.get('faces'))}</td><td>{_num(c.get('likeness'))}</td><td>{_e(c.get('matches'))}</td>"
            f"<td>{_e(c.get('copies'))}</td><td>{_num(c.get('variety'))}</td>"
            f"<td>{_num(c.get('validation_loss'), 4)}</td><td>{_e(c.get('checkpoint') or '-')}</td></tr>"
        )
    return f'<table id="score-table">{"".join(rows)}</table>'


def _model_note(doc: dict[str, Any]) -> str:
    model: dict[str, Any] = doc["model"] if isinstance(doc.get("model"), dict) else {}
    return (
        f'<p class="sub">Identity model {_e(model.get("id", "?"))}; a sample is the person below distance '
        f"{_e(model.get('same_person_distance', 0.6))}; likeness = {_e(model.get('likeness', ''))}. "
        "See docs/score.md.</p>"
    )
