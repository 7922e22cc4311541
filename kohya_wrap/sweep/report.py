"""`kohya-wrap report SWEEP_DIR`: one self-contained page comparing a sweep's variants.

The loss curves of every variant overlaid (kohya_wrap.report.charts.line_chart), the score per step of
each variant when its score.json exists, a table of variants (values, outcome, final loss, best step)
and the best variant with its checkpoint: the highest likeness at its recommended step when scores
exist, else the lowest final loss among the finished variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kohya_wrap import __version__, rundir
from kohya_wrap.codec import TomlValue
from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.events import Outcome
from kohya_wrap.fsutil import atomic_write_text
from kohya_wrap.sweep.state import VariantEntry, read_sweep

if TYPE_CHECKING:
    from kohya_wrap.rundir import RunManifest

REPORT_FILE = rundir.REPORT_HTML  # SWEEP_DIR/report.html, named as a run's
_PALETTE = (
    "#1f5fa8",
    "#b25d12",
    "#16794a",
    "#b42318",
    "#6b3fa0",
    "#0f7c8c",
    "#8a6d00",
    "#c2185b",
    "#455a64",
    "#5d8c1a",
)
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;text-align:left;border-bottom:1px solid #eee}
svg{background:#fcfcfc;border:1px solid #e5e5e5}svg .axis{stroke:#999}svg .tick{fill:#555;font-size:11px}
svg polyline{fill:none;stroke-width:1.6}
.sw{display:inline-block;width:1.2rem;height:3px;vertical-align:middle;margin-right:.3rem}
.best{background:#eef7f1}
"""


@dataclass(frozen=True)
class VariantReport:
    name: str
    values: dict[str, TomlValue]
    run_dir: Path
    outcome: Outcome | Literal["planned", "unfinished"]
    final_loss: float | None
    loss: tuple[tuple[int, float], ...]
    likeness: tuple[tuple[int, float], ...]  # (step, likeness) from score.json
    recommended_step: int | None
    checkpoint: str | None  # the best checkpoint of this variant: recommended, else the final LoRA
    scored: bool = False  # it has a score.json (with or without a likeness: no sample may have drawn a face)
    score_reason: str | None = None  # score.json's reason for its recommendation, or for none


def _checkpoint_at(manifest: RunManifest | None, step: int | None) -> str | None:
    for entry in manifest.checkpoints if manifest is not None and step is not None else ():
        if entry.step == step:
            return entry.path
    return None


@dataclass(frozen=True)
class _Scored:
    """What the sweep page takes from a run's score (kohya_wrap.score.load_score)."""

    likeness: tuple[tuple[int, float], ...] = ()
    recommended_step: int | None = None
    scored: bool = False
    reason: str | None = None


def _scored(run_dir: Path) -> _Scored:
    from kohya_wrap.score import load_score

    score = load_score(run_dir)
    if score is None:
        return _Scored()
    likeness = tuple((c.step, c.likeness) for c in score.checkpoints if c.likeness is not None)
    return _Scored(likeness, score.recommended_step, True, score.reason)


def _variant(entry: VariantEntry) -> VariantReport | None:
    from kohya_wrap.report.summary import load_run

    run_dir = Path(entry.run_dir)
    try:
        summary = load_run(run_dir)
    except KohyaWrapError:
        return None  # not planned yet
    score = _scored(run_dir)
    checkpoint = _checkpoint_at(summary.manifest, score.recommended_step) or (
        str(summary.lora_file) if summary.lora_file else None
    )
    return VariantReport(
        name=entry.name,
        values=dict(entry.values),
        run_dir=run_dir,
        outcome=summary.outcome,
        final_loss=summary.final_loss,
        loss=tuple((p.step, p.loss) for p in summary.loss),
        likeness=score.likeness,
        recommended_step=score.recommended_step,
        checkpoint=checkpoint,
        scored=score.scored,
        score_reason=score.reason,
    )


def load_variants(sweep_dir: Path) -> list[VariantReport]:
    reports = (_variant(entry) for entry in read_sweep(sweep_dir).variants)
    return [r for r in reports if r is not None]


def best_variant(variants: list[VariantReport]) -> tuple[VariantReport | None, str]:
    """The variant to take, and why."""
    scored: list[tuple[float, VariantReport]] = []
    for v in variants:
        likeness = dict(v.likeness).get(v.recommended_step) if v.recommended_step is not None else None
        if likeness is not None:
            scored.append((likeness, v))
    if scored:
        score, best = max(scored, key=lambda sv: sv[0])
        return best, f"highest likeness ({score:.3f}) at its recommended step {best.recommended_step}"
    finished = [
        v for v in variants if v.outcome == "finished" and v.final_loss is not None and math.isfinite(v.final_loss)
    ]
    if finished:
        best = min(finished, key=lambda v: v.final_loss or 0.0)
        unscored = (
            "no variant's score has a likeness (no sample drew a face)"
            if any(v.scored for v in variants)
            else "no variant has a score yet (`kohya-wrap score RUN_DIR`)"
        )
        return best, (
            f"lowest final loss ({best.final_loss:.4g}) among the finished variants; {unscored}, "
            "and loss says little about likeness"
        )
    return None, "no variant has finished"


def _e(value: object) -> str:
    import html

    return html.escape(str(value), quote=True)


def _no_score(variants: list[VariantReport]) -> str:
    """Why there is no likeness to chart: nothing scored yet, or scored without a face in any sample."""
    scored = [v for v in variants if v.scored]
    if not scored:
        return '<p id="no-score">No variant has been scored yet (`kohya-wrap score RUN_DIR` writes score.json).</p>'
    which = (
        "Every variant was scored"
        if len(scored) == len(variants)
        else f"{len(scored)} of {len(variants)} variants were scored"
    )
    reasons = "".join(f"<li>{_e(v.name)}: {_e(v.score_reason or 'no likeness in its score.json')}</li>" for v in scored)
    return (
        f'<p id="no-score">{which}, and no sample of any checkpoint drew a face to compare with the photos, '
        f"so there is no likeness to chart (docs/score.md says what to try).</p><ul>{reasons}</ul>"
    )


def _best_section(best: VariantReport | None, why: str) -> str:
    if best is None:
        return f'<p id="best">{_e(why)}.</p>'
    return (
        f'<p id="best" data-variant="{_e(best.name)}"><b>{_e(best.name)}</b>: {_e(why)}.<br>'
        f"checkpoint: <code>{_e(best.checkpoint or '-')}</code></p>"
    )


def _variant_table(variants: list[VariantReport], best: VariantReport | None) -> str:
    rows = [
        "<tr><th>variant</th><th>values</th><th>outcome</th><th>final loss</th><th>best step</th>"
        "<th>checkpoint</th></tr>"
    ]
    for v in variants:
        values = ", ".join(f"{k}={val}" for k, val in v.values.items())
        loss = f"{v.final_loss:.4g}" if v.final_loss is not None else "—"
        cls = ' class="best"' if best is not None and v.name == best.name else ""
        rows.append(
            f'<tr{cls} data-variant="{_e(v.name)}"><td>{_e(v.name)}</td><td>{_e(values)}</td>'
            f"<td>{_e(v.outcome)}</td><td>{_e(loss)}</td><td>{_e(v.recommended_step or '—')}</td>"
            f"<td><code>{_e(Path(v.checkpoint).name if v.checkpoint else '—')}</code></td></tr>"
        )
    return f'<table id="variants">{"".join(rows)}</table>'


def _charts(variants: list[VariantReport], legend: str) -> list[str]:
    from kohya_wrap.report.charts import Series, line_chart

    loss_series = [
        Series(f"v{i}", f"loss-{v.name}", [s for s, _ in v.loss], [y for _, y in v.loss])
        for i, v in enumerate(variants)
        if v.loss
    ]
    chart = line_chart(loss_series, svg_id="sweep-loss", title="average loss per step, every variant", x_label="step")
    body = [f'<p class="legend">{legend}</p>{chart}' if chart else '<p id="no-loss">No loss recorded yet.</p>']
    body.append("<h2>Score per step</h2>")
    score_series = [
        Series(f"v{i}", f"likeness-{v.name}", [s for s, _ in v.likeness], [y for _, y in v.likeness])
        for i, v in enumerate(variants)
        if v.likeness
    ]
    chart = (
        line_chart(
            score_series, svg_id="sweep-likeness", title="likeness per checkpoint step, every variant", x_label="step"
        )
        if score_series
        else ""
    )
    body.append(f'<p class="legend">{legend}</p>{chart}' if chart else _no_score(variants))
    return body


def render(sweep_dir: Path, variants: list[VariantReport]) -> str:
    best, why = best_variant(variants)
    colours = {v.name: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(variants)}
    styles = "".join(f"svg .v{i}{{stroke:{colours[v.name]}}}" for i, v in enumerate(variants))
    legend = "".join(
        f'<span style="margin-right:1rem"><i class="sw" style="background:{colours[v.name]}"></i>{_e(v.name)}</span>'
        for v in variants
    )
    body = [
        f"<h1>kohya-wrap sweep {_e(sweep_dir.name)}</h1>",
        f"<p>{_e(sweep_dir)} · {len(variants)} variant(s) · report by kohya-wrap {_e(__version__)}</p>",
        "<h2>Best variant</h2>",
        _best_section(best, why),
        "<h2>Variants</h2>",
        _variant_table(variants, best),
        "<h2>Loss</h2>",
        *_charts(variants, legend),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f"<title>kohya-wrap sweep {_e(sweep_dir.name)}</title><style>{_STYLE}{styles}</style></head>\n<body>"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_sweep_report(sweep_dir: Path, out: Path | None = None) -> Path:
    sweep_dir = Path(sweep_dir)
    page = render(sweep_dir, load_variants(sweep_dir))
    target = Path(out) if out is not None else sweep_dir / REPORT_FILE
    atomic_write_text(target, page)
    return target
