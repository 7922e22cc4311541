"""report.html: one self-contained page about a run, readable offline, forever.

Everything is inside the file: the charts are inline SVG written here, the images are data URIs,
the styles and the one small script are inline, and a Content-Security-Policy forbids every
network fetch. The script only records on <body> what rendered (image load state, curve points),
for people checking the page and for the browser test.
"""

from __future__ import annotations

import base64
import json
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast, get_args, get_origin

import msgspec

from kohya_wrap import __version__, rundir
from kohya_wrap.codec import to_builtins
from kohya_wrap.events import ENDED_WELL
from kohya_wrap.fsutil import atomic_write_text
from kohya_wrap.report.charts import Series, line_chart
from kohya_wrap.report.charts import esc as _e
from kohya_wrap.report.charts import num as _num
from kohya_wrap.report.score_section import score_section
from kohya_wrap.report.summary import RunSummary, load_run, moving_average
from kohya_wrap.rundir import format_duration
from kohya_wrap.sample.session import SampleSession, load_sessions
from kohya_wrap.score import ScoreReport, recommended_step
from kohya_wrap.sdscripts.samples import find_samples, read_prompt_texts

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;color:#1b1b1b}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;text-align:left;vertical-align:top;border-bottom:1px solid #eee}
th{font-weight:600}
.kv th{color:#555;font-weight:500;white-space:nowrap}
.outcome-finished{color:#16794a;font-weight:600}.outcome-bad{color:#b42318;font-weight:600}.outcome-open{color:#555;font-weight:600}
.grid td,.grid th{text-align:center;border:1px solid #e5e5e5}.grid td{white-space:nowrap}.grid img{display:inline-block;width:160px;height:auto;margin:2px}
.grid tr.recommended th{color:#16794a}.grid tr.recommended td{background:#eaf6ef}
.grid th.prompt{max-width:200px;font-weight:500;font-size:.85rem}
svg{background:#fcfcfc;border:1px solid #e5e5e5}
svg .axis{stroke:#999;stroke-width:1}svg .tick{fill:#555;font-size:11px}
svg .loss{fill:none;stroke:#9bb8d8;stroke-width:1}svg .avg{fill:none;stroke:#1f5fa8;stroke-width:2}
svg .lr{fill:none;stroke:#b25d12;stroke-width:1.5}
.legend span{display:inline-block;margin-right:1.2rem}.sw{display:inline-block;width:1.2rem;height:3px;vertical-align:middle;margin-right:.3rem}
ul.warn li{color:#8a4b00}ul.err li{color:#b42318}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem}
code{font-size:.85rem}
"""

# Records what rendered on <body>: data-images-total/-loaded/-broken and data-curve-points.
_SCRIPT = """
window.addEventListener('load', function () {
  var images = document.images, loaded = 0, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { loaded++; } else { broken++; }
  }
  var line = document.getElementById('loss-line');
  var b = document.body.dataset;
  b.imagesTotal = images.length; b.imagesLoaded = loaded; b.imagesBroken = broken;
  b.curvePoints = line ? line.points.numberOfItems : 0;
  b.rendered = 'yes';
});
"""


# Samples are embedded as JPEG: a 512 px PNG sample is ~0.5 MB, so a 3000-step run (12 checkpoints x
# 4 prompts) made a 40 MB page, rewritten at every checkpoint and shown inline in Colab. JPEG at
# quality 90 keeps what a face needs to be judged at a tenth of that; the PNGs stay in output/sample/.
EMBED_JPEG_QUALITY = 90
EMBED_MAX_SIDE = 768


def data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def image_uri(path: Path) -> str:
    """A sample image as an embedded JPEG (at most EMBED_MAX_SIDE px); unreadable files as they are."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if max(image.size) > EMBED_MAX_SIDE:
                image.thumbnail((EMBED_MAX_SIDE, EMBED_MAX_SIDE), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=EMBED_JPEG_QUALITY)
    except (OSError, UnidentifiedImageError, ValueError):
        return data_uri(path)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def average_window(count: int) -> int:
    """About a tenth of the curve, between 2 and 100 points."""
    return max(2, min(100, count // 10))


def loss_section(summary: RunSummary) -> str:
    if not summary.loss:
        return '<h2>Loss</h2><p id="no-loss">No loss was recorded (the run did not reach a training step).</p>'
    xs = [p.step for p in summary.loss]
    ys = [p.loss for p in summary.loss]
    window = average_window(len(ys))
    chart = line_chart(
        [Series("loss", "loss-line", xs, ys), Series("avg", "loss-average", xs, moving_average(ys, window))],
        svg_id="loss-curve",
        title="training loss per step",
        x_label="step",
    )
    non_finite = sum(1 for y in ys if not math.isfinite(y))
    out = [
        "<h2>Loss</h2>",
        '<p class="legend"><span><i class="sw" style="background:#9bb8d8"></i>average loss as the trainer reports it '
        f'({len(ys)} readings)</span><span><i class="sw" style="background:#1f5fa8"></i>moving average over {window} readings</span></p>',
        chart,
    ]
    if non_finite:
        out.append(f'<p class="outcome-bad">{non_finite} readings were not finite (NaN or inf) and are not drawn.</p>')
    lrs = [(p.step, p.lr) for p in summary.loss if p.lr is not None]
    out.append("<h2>Learning rate</h2>")
    if lrs:
        out.append(
            line_chart(
                [Series("lr", "lr-line", [s for s, _ in lrs], [lr for _, lr in lrs])],
                svg_id="lr-curve",
                title="learning rate per step",
                x_label="step",
                height=200,
            )
        )
    else:
        out.append('<p id="no-lr">The trainer did not report a learning rate with its progress.</p>')
    return "".join(out)


# -- sample grids ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GridRow:
    label: str
    step: int | None
    cells: tuple[tuple[Path, ...], ...]  # one tuple of images per prompt column


@dataclass(frozen=True)
class Grid:
    title: str
    grid_id: str
    prompts: tuple[str, ...]
    rows: tuple[GridRow, ...]
    note: str = ""


def training_grid(summary: RunSummary) -> Grid | None:
    if summary.output_dir is None:
        return None
    found = find_samples(summary.output_dir, summary.output_name)
    if not found:
        return None
    steps_per_epoch = summary.plan.steps.steps_per_epoch
    rows: dict[tuple[int, str], dict[int, list[Path]]] = {}
    labels: dict[tuple[int, str], tuple[str, int | None]] = {}
    for path, name in found:
        step: int | None
        if name.step is not None:
            key, label, step = (name.step, "s"), f"step {name.step}", name.step
        else:
            epoch = name.epoch or 0
            step = epoch * steps_per_epoch if isinstance(steps_per_epoch, int) else None
            key = (step if step is not None else epoch, "e")
            label = f"epoch {epoch}" + (f" (step {step})" if step is not None else "")
        rows.setdefault(key, {}).setdefault(name.prompt_index, []).append(path)
        labels[key] = (label, step)
    prompts = read_prompt_texts(rundir.paths(summary.run_dir).sample_prompts)
    columns = max(len(prompts), max(i for cells in rows.values() for i in cells) + 1)
    prompts += [""] * (columns - len(prompts))
    return Grid(
        title="Samples made during training",
        grid_id="training-samples",
        note=f"Shown as JPEG (quality {EMBED_JPEG_QUALITY}); the original PNGs are in {summary.output_dir / 'sample'}.",
        prompts=tuple(prompts[:columns]),
        rows=tuple(
            GridRow(labels[key][0], labels[key][1], tuple(tuple(cells.get(i, ())) for i in range(columns)))
            for key, cells in sorted(rows.items())
        ),
    )


def session_grid(session: SampleSession, index: int) -> Grid:
    by_row: dict[tuple[int, str], dict[int, list[Path]]] = {}
    labels: dict[tuple[int, str], tuple[str, int | None]] = {}
    for image in session.images:
        key = (image.step if image.step is not None else -1, image.lora_name)
        label = f"step {image.step}" if image.step is not None else image.lora_name
        by_row.setdefault(key, {}).setdefault(image.prompt_index, []).append(image.path)
        labels[key] = (label, image.step)
    columns = len(session.prompts)
    note = (
        f"weight {session.weight}, seed {session.seed}, {session.width}x{session.height}, "
        f"{session.sampler_steps} sampler steps, made {session.created_at}"
    )
    return Grid(
        title=f"Samples from `kohya-wrap sample` ({session.folder.name})",
        grid_id=f"sample-session-{index}",
        prompts=tuple(session.prompts),
        rows=tuple(
            GridRow(labels[key][0], labels[key][1], tuple(tuple(cells.get(i, ())) for i in range(columns)))
            for key, cells in sorted(by_row.items())
        ),
        note=note,
    )


def grid_html(grid: Grid, recommended: int | None = None) -> str:
    """The grid; the row of the recommended step (`score`) is marked."""
    out = [f"<h3>{_e(grid.title)}</h3>"]
    if grid.note:
        out.append(f'<p class="sub">{_e(grid.note)}</p>')
    out.append(
        f'<table class="grid" id="{_e(grid.grid_id)}" data-rows="{len(grid.rows)}" data-columns="{len(grid.prompts)}">'
    )
    out.append("<tr><th>checkpoint</th>")
    for i, prompt in enumerate(grid.prompts):
        out.append(f'<th class="prompt" data-prompt-index="{i}">#{i}<br>{_e(prompt)}</th>')
    out.append("</tr>")
    for row in grid.rows:
        step_attr = f' data-step="{row.step}"' if row.step is not None else ""
        if recommended is not None and row.step == recommended:
            out.append(
                f'<tr class="grid-row recommended"{step_attr} data-recommended="yes">'
                f"<th>{_e(row.label)}<br><b>recommended</b></th>"
            )
        else:
            out.append(f'<tr class="grid-row"{step_attr}><th>{_e(row.label)}</th>')
        for i, cell in enumerate(row.cells):
            out.append(f'<td data-prompt-index="{i}">')
            for path in cell:
                out.append(f'<img alt="{_e(path.name)}" title="{_e(path.name)}" src="{image_uri(path)}">')
            out.append("</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


# -- summary, manifest, warnings ---------------------------------------------------------------


def _kv_table(rows: Sequence[tuple[str, str]], table_id: str) -> str:
    body = "".join(f'<tr><th>{_e(k)}</th><td data-key="{_e(k)}">{v}</td></tr>' for k, v in rows)
    return f'<table class="kv" id="{_e(table_id)}">{body}</table>'


def summary_rows(summary: RunSummary) -> list[tuple[str, str]]:
    dataset = _num(summary.train_images)
    if summary.train_images_x_repeats is not None:
        dataset += f" images ({summary.train_images_x_repeats} with repeats)"
    if summary.reg_images:
        dataset += f", {summary.reg_images} regularization images"
    steps = f"{_num(summary.last_step)} of {_num(summary.total_steps)}"
    css = {
        "finished": "outcome-finished",
        "stopped_early": "outcome-finished",
        "planned": "outcome-open",
        "unfinished": "outcome-open",
    }.get(summary.outcome, "outcome-bad")
    outcome = f'<span class="{css}">{_e(summary.outcome)}</span>'
    if summary.exit_code is not None:
        outcome += f" (exit code {summary.exit_code})"
    rows: list[tuple[str, str]] = []
    stopped = summary.manifest.stopped_early if summary.manifest is not None else None
    if summary.outcome == "stopped_early" and stopped:
        seconds = stopped.seconds_saved
        saved = f"{_num(stopped.steps_saved)} steps" + (
            f", about {format_duration(float(seconds))} of GPU time" if seconds is not None else ""
        )
        rows = [
            ("stopped early", _e(f"at step {stopped.stopped_at}: {stopped.reason}")),
            ("GPU time saved", _e(saved)),
        ]
    return [
        ("preset", _e(summary.preset or "—")),
        ("dataset", _e(dataset)),
        ("steps", _e(steps)),
        ("training time", _e(format_duration(summary.elapsed_s))),
        ("wall time", _e(format_duration(summary.wall_s))),
        ("mean it/s", _e(_num(summary.mean_it_per_s, 3))),
        ("final loss", _e(_num(summary.final_loss))),
        ("outcome", outcome),
        *rows,
        ("LoRA file", f"<code>{_e(summary.lora_file)}</code>" if summary.lora_file else "— (not written)"),
    ]


def _rows(value: object, kind: object = None, prefix: str = "") -> list[tuple[str, object]]:
    """A record as (dotted name, value) rows, nested as its JSON is: a record's fields, and the entries of a
    field its type declares a mapping, are rows of their own; anything else (or an empty one) is one row."""
    if isinstance(value, msgspec.Struct) and (fields := _written_fields(value)):
        return [row for f, v in fields for row in _rows(v, f.type, _dotted(prefix, f.encode_name))]
    item = _mapping_item_type(kind)
    if item is not None and value:
        entries = cast("Mapping[str, object]", value)
        return [row for k, v in entries.items() for row in _rows(v, item, _dotted(prefix, str(k)))]
    return [(prefix, value)]


def _written_fields(record: msgspec.Struct) -> list[tuple[msgspec.structs.FieldInfo, object]]:
    """The fields the record's JSON holds: an UNSET one is left out (and, where the record omits
    defaults, one at its default), as codec writes it."""
    omit_defaults = record.__struct_config__.omit_defaults
    fields = [(f, getattr(record, f.name)) for f in msgspec.structs.fields(record)]
    return [(f, v) for f, v in fields if v is not msgspec.UNSET and not (omit_defaults and _at_default(f, v))]


def _at_default(field: msgspec.structs.FieldInfo, value: object) -> bool:
    if field.default is not msgspec.NODEFAULT:
        return bool(value == field.default)
    return field.default_factory is not msgspec.NODEFAULT and bool(value == field.default_factory())


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _mapping_item_type(kind: object) -> object | None:
    """The value type of a field typed `dict[str, X]` or `Mapping[str, X]` (optional or not), else None."""
    for option in (kind, *get_args(kind)):
        if get_origin(option) in (dict, Mapping):
            item: object = get_args(option)[1]
            return item
    return None


def _value_cell(value: object) -> str:
    data = to_builtins(value)  # as plan.json and run.json write it (a non-finite float as "nan", a path as text)
    if isinstance(data, str):
        return f"<code>{_e(data)}</code>"
    return f"<code>{_e(json.dumps(data, ensure_ascii=False))}</code>"


def manifest_section(summary: RunSummary) -> str:
    plan = summary.plan.document()
    out = ["<h2>Manifest</h2>", "<h3>plan.json</h3>"]
    skip = {"values", "launch"}
    shown = [(f, v) for f, v in _written_fields(plan) if f.encode_name not in skip]
    rows = [row for f, v in shown for row in _rows(v, f.type, f.encode_name)]
    out.append(_kv_table([(k, _value_cell(v)) for k, v in rows], "plan-manifest"))
    values, sources = summary.plan.values, summary.plan.sources
    if values:
        out.append(
            '<h3>trainer settings</h3><table class="kv" id="plan-values"><tr><th>name</th><th>value</th><th>from</th></tr>'
        )
        for name, value in values.items():
            out.append(
                f"<tr><td><code>{_e(name)}</code></td><td>{_value_cell(value)}</td>"
                f"<td>{_e(sources.get(name, ''))}</td></tr>"
            )
        out.append("</table>")
    attempts = summary.manifest.attempts if summary.manifest is not None else ()
    if attempts and attempts[-1].argv:
        out.append(f"<h3>command</h3><pre>{_e(shlex.join(attempts[-1].argv))}</pre>")
    out.append("<h3>run.json</h3>")
    if summary.manifest is None:
        out.append("<p>No run.json yet: the run has not ended.</p>")
    else:
        out.append(_kv_table([(k, _value_cell(v)) for k, v in _rows(summary.manifest)], "run-manifest"))
    return "".join(out)


def messages_section(summary: RunSummary) -> str:
    out = ["<h2>Warnings and errors</h2>"]
    if not summary.warnings and not summary.errors:
        out.append('<p id="no-warnings">None.</p>')
    if summary.errors:
        out.append('<ul class="err" id="errors">' + "".join(f"<li>{_e(m)}</li>" for m in summary.errors) + "</ul>")
    if summary.warnings:
        out.append('<ul class="warn" id="warnings">' + "".join(f"<li>{_e(m)}</li>" for m in summary.warnings) + "</ul>")
    return "".join(out)


def render_report(summary: RunSummary, sessions: Sequence[SampleSession] = (), score: ScoreReport | None = None) -> str:
    best = recommended_step(score)
    grids = [g for g in [training_grid(summary)] if g is not None]
    grids += [session_grid(s, i) for i, s in enumerate(sessions)]
    title = f"kohya-wrap run {summary.run_dir.name}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(summary.run_dir)} · planned {_e(summary.created_at or "—")} · report by kohya-wrap {_e(__version__)}</p>',
        "<h2>Summary</h2>",
        _kv_table(summary_rows(summary), "summary"),
        loss_section(summary),
        score_section(score),
        _advice_html(score, summary.run_dir) if summary.outcome in ENDED_WELL else "",
        "<h2>Samples</h2>",
        "".join(grid_html(g, best) for g in grids) if grids else '<p id="no-samples">No sample images yet.</p>',
        messages_section(summary),
        manifest_section(summary),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style><script>{_SCRIPT}</script></head>\n"
        f'<body data-outcome="{_e(summary.outcome)}">' + "\n".join(body) + "\n</body></html>\n"
    )


def _advice_html(score: ScoreReport | None, run_dir: Path) -> str:
    """The advice of the score (score.advice), under the score's table."""
    if score is None:
        return ""
    from kohya_wrap.score.advice import advise

    advice = advise(score, run_dir)
    return f'<p id="advice" data-kind="{_e(advice.kind)}"><b>advice</b>: {_e(advice.text)}</p>'


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's report (RUN_DIR/report.html unless `out` is given) and return its path."""
    summary = load_run(run_dir)
    page = render_report(summary, load_sessions(summary.run_dir), summary.score)
    target = Path(out) if out is not None else rundir.paths(summary.run_dir).report_html
    atomic_write_text(target, page)
    return target
