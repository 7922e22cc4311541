"""The plain (not a terminal) view of a training run: one line per change, said once."""

from __future__ import annotations

import io

from kohya_wrap.cli.train_view import PlainView
from kohya_wrap.events import Checkpoint, Finished, Phase, Progress


def test_plain_view_says_each_change_once():
    out = io.StringIO()
    view = PlainView(out, interval=3600)
    for event in (
        Phase("training"),
        Progress(step=1, total=2, rate=1.5, rate_unit="s/it", elapsed_s=1.5, eta_s=1.5, avr_loss=None),
        Progress(step=2, total=2, rate=1.5, rate_unit="s/it", elapsed_s=3.0, eta_s=0.0, avr_loss=0.25),
        Checkpoint(path="/r/output/face.safetensors", step=2),
        Phase("finished"),
        Finished(outcome="finished", exit_code=0, returncode=0),
    ):
        view(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[training]" and lines[1].startswith("step 1/2")  # the first step, then every interval
    assert lines[2].startswith("step 2/2") and lines[2].endswith("loss 0.25")  # the last step always
    assert lines[3:] == ["checkpoint: /r/output/face.safetensors", "[finished]"]


def test_an_outcome_the_trainer_did_not_announce_is_printed():
    out = io.StringIO()
    view = PlainView(out)
    view(Phase("training"))
    view(Finished(outcome="interrupted", exit_code=130, returncode=-2))
    assert out.getvalue().splitlines() == ["[training]", "[interrupted]"]


def test_the_images_line_says_images_and_repeats():
    from kohya_wrap.events import Summary
    from kohya_wrap.rundir.plan_record import PlanSubset

    def line(subsets, train_images):
        out = io.StringIO()
        view = PlainView(out, subsets=subsets)
        view(Summary(train_images, 0, 300, 1, "2", 1, 300))
        return out.getvalue().strip()

    ten = PlanSubset("/d/img/60_ohwx man", 10, 60, "ohwx man", False)
    assert line([ten], 600) == "300 steps: 10 images x 60 repeats, 1 epoch, batch 2"
    one = PlanSubset("/d/img/1_ohwx man", 4, 1, "ohwx man", False)
    reg = PlanSubset("/d/reg/1_man", 4, 1, "man", True)
    assert line([one, reg], 4) == "300 steps: 4 images x 1 repeat, 1 epoch, batch 2"
    assert line([], 600) == "300 steps: 600 images with repeats, 1 epoch, batch 2"  # no plan known


def test_live_scores_show_in_both_views():
    from rich.console import Console

    from kohya_wrap.cli.train_view import LiveView
    from kohya_wrap.events import Score, StopEarly

    events = (
        Phase("training"),
        Score(step=250, samples=3, faces=3, likeness=0.23, matches=0, copies=0),
        Score(step=750, samples=3, faces=3, likeness=0.69, matches=3, copies=0, recommended=750),
        Score(step=1250, samples=3, faces=2, likeness=0.75, matches=2, copies=2, recommended=750),
        StopEarly(step=1250, reason="copies persist: most samples of steps 1000 and 1250 reproduce a training photo"),
    )
    out = io.StringIO()
    plain = PlainView(out)
    for event in events:
        plain(event)
    lines = out.getvalue().splitlines()
    assert lines[1] == "score step 250: likeness 0.23, 0/3 the person, 0 copies"
    assert lines[2] == "score step 750: likeness 0.69, 3/3 the person, 0 copies (recommended so far: step 750)"
    assert lines[3].startswith("score step 1250: likeness 0.75, 2/3 the person, 2 copies, 1 without a face")
    assert lines[4].startswith("stopping early after step 1250: copies persist")

    screen = io.StringIO()
    live = LiveView(Console(file=screen, force_terminal=True, width=120))
    for event in events:
        live(event)
    live.close()
    text = screen.getvalue()
    assert "likeness" in text and "0.69" in text and "step 750 (so far)" in text and "stopping early" in text


def test_the_trainers_keyboard_interrupt_on_a_stop_is_no_error_line():
    """Stopping early (or Ctrl-C) sends SIGINT: the trainer's KeyboardInterrupt ends the run, the outcome says so."""
    from rich.console import Console

    from kohya_wrap.cli.train_view import LiveView
    from kohya_wrap.events import Error, StopEarly

    events = (
        Phase("training"),
        StopEarly(step=1250, reason="copies persist"),
        Error("KeyboardInterrupt", kind="interrupted"),
        Error("KeyboardInterrupt", kind="interrupted"),
        Finished(outcome="stopped_early", exit_code=0, returncode=0),
    )
    out = io.StringIO()
    plain = PlainView(out)
    for event in events:
        plain(event)
    assert out.getvalue().splitlines() == [
        "[training]",
        "stopping early after step 1250: copies persist",
        "[stopped_early]",
    ]
    plain(Error("RuntimeError: boom", kind="exception"))
    assert out.getvalue().splitlines()[-1] == "error: RuntimeError: boom"

    screen = io.StringIO()
    live = LiveView(Console(file=screen, force_terminal=True, width=120))
    for event in events:
        live(event)
    live.close()
    assert "KeyboardInterrupt" not in screen.getvalue()
