"""The sd-scripts output parser against every recorded run (tests/data/transcripts) and edge cases."""

import math
import random
from pathlib import Path

import pytest

from kohya_wrap.codec import to_builtins
from kohya_wrap.events import Checkpoint, Epoch, Error, Phase, Progress, StateSaved, Summary, Warning_
from kohya_wrap.sdscripts.output import OutputParser, english, step_from_file_name, strip_ansi

TRANSCRIPTS = Path(__file__).parents[1] / "data" / "transcripts"
PIPE_RUNS = sorted(p.name.removesuffix(".pipe.stderr.txt") for p in TRANSCRIPTS.glob("*.pipe.stderr.txt"))


def parse_streams(streams, read_size=None):
    parser = OutputParser()
    events = []
    for stream, data in streams:
        size = read_size or len(data) or 1
        for i in range(0, len(data), size):
            events += parser.feed(stream, data[i : i + size])
        events += parser.flush()
    return events + parser.close()


def pipe_run(name, read_size=None):
    return parse_streams(
        [
            ("stderr", (TRANSCRIPTS / f"{name}.pipe.stderr.txt").read_bytes()),
            ("stdout", (TRANSCRIPTS / f"{name}.pipe.stdout.txt").read_bytes()),
        ],
        read_size,
    )


def of(events, cls):
    return [e for e in events if isinstance(e, cls)]


def plain(events):
    out = []
    for e in events:
        d = to_builtins(e)
        d.pop("t")
        out.append(d)
    return out


def test_all_recorded_runs_are_here():
    assert len(PIPE_RUNS) == 18


@pytest.mark.parametrize("name", PIPE_RUNS)
@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_read_size_does_not_change_the_events(name, read_size):
    assert plain(pipe_run(name, read_size)) == plain(pipe_run(name))


@pytest.mark.parametrize("name", ["A_cli", "B_config"])
def test_successful_run(name):
    events = pipe_run(name)
    output_name = "tinylora" if name == "A_cli" else "tinylora_cfg"
    out_dir = f"/data/runs/out/{name}_pipe"
    assert [e.phase for e in of(events, Phase)][:3] == ["preparing", "loading_model", "caching_latents"]
    assert [e.phase for e in of(events, Phase)][3:] == [
        "training",
        "sampling",
        "training",
        "sampling",
        "training",
        "finished",
    ]
    assert of(events, Summary) == [
        Summary(
            train_images=40, reg_images=0, batches_per_epoch=40, epochs=1, batch_size="1", grad_accum=1, total_steps=4
        )
    ]
    assert of(events, Epoch) == [Epoch(epoch=1, total=1)]
    assert of(events, Checkpoint) == [
        Checkpoint(path=f"{out_dir}/{output_name}-step00000002.safetensors", step=2),
        Checkpoint(path=f"{out_dir}/{output_name}-step00000004.safetensors", step=4),
        Checkpoint(path=f"{out_dir}/{output_name}.safetensors", step=None),
    ]
    progress = of(events, Progress)
    assert progress[0] == Progress(
        step=0, total=4, rate=None, rate_unit="it/s", elapsed_s=0.0, eta_s=None, avr_loss=None
    )
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert progress[-1].step == 4 and progress[-1].total == 4 and progress[-1].rate_unit == "s/it"
    assert progress[-1].avr_loss == 1.12
    assert of(events, Warning_) == [Warning_(message="no regularization images")]
    assert of(events, Error) == []


def test_a_cli_progress_values():
    progress = of(pipe_run("A_cli"), Progress)
    assert progress[1] == Progress(
        step=1, total=4, rate=4.54, rate_unit="s/it", elapsed_s=4.0, eta_s=13.0, avr_loss=None
    )
    assert progress[2].avr_loss == 1.24


def test_terminal_typescript_gives_the_same_story():
    """Both streams merged, colours, OSC-8 links, CRLF, 120 columns."""
    events = parse_streams([("stderr", (TRANSCRIPTS / "A_cli.tty.typescript").read_bytes())], 4096)
    pipe = pipe_run("A_cli")
    assert [c.step for c in of(events, Checkpoint)] == [2, 4, None]
    assert of(events, Summary) == of(pipe, Summary)
    assert of(events, Progress)[-1].step == 4 and of(events, Progress)[-1].avr_loss == 1.12
    assert of(events, Warning_) == [Warning_(message="no regularization images")]
    assert of(events, Phase)[-1] == Phase(phase="finished")


def test_missing_base_model():
    errors = of(pipe_run("F1_missing_base"), Error)
    assert errors[0].kind == "model_missing"
    assert "neither a valid local path nor a valid repo id" in errors[0].message
    assert errors[1].kind == "launcher"  # accelerate's CalledProcessError after its child failed


def test_missing_base_model_on_a_terminal():
    events = parse_streams([("stderr", (TRANSCRIPTS / "F1_missing_base.tty.typescript").read_bytes())], 333)
    assert [e.kind for e in of(events, Error)] == ["model_missing", "launcher"]


def test_no_data_found_is_an_error_even_though_the_trainer_exits_0():
    events = pipe_run("F2_empty_data")
    assert of(events, Error) == [
        Error(
            message="No data found. Please verify arguments (train_data_dir must be the parent of folders with images)",
            kind="no_data",
        )
    ]
    assert of(events, Progress) == []


def test_unknown_key_in_config_file_trains_normally():
    events = pipe_run("F3a_train_unknown_key")
    assert of(events, Error) == [] and of(events, Progress)[-1].step == 2


def test_wrong_type_in_config_file_is_a_crash():
    errors = of(pipe_run("F3b_train_wrong_type"), Error)
    assert errors[0] == Error(message="TypeError: unsupported operand type(s) for -: 'str' and 'int'", kind="exception")


@pytest.mark.parametrize(
    "name, detail",
    [
        ("F3c_dataset_unknown_key", "extra keys not allowed @ data['datasets'][0]['subsets'][0]['num_repeat']"),
        (
            "F3d_dataset_wrong_type",
            "expected int for dictionary value @ data['datasets'][0]['subsets'][0]['num_repeats']",
        ),
    ],
)
def test_dataset_config_rejected(name, detail):
    errors = of(pipe_run(name), Error)
    assert errors[0] == Error(message="Invalid user config", kind="config_rejected")
    assert errors[1] == Error(message=f"voluptuous.error.MultipleInvalid: {detail}", kind="config_rejected")


def test_corrupt_image():
    events = pipe_run("F4_corrupt_image")
    assert any(
        w.message.startswith("failed to get image size: /data/runs/data/corrupt/10_ohwx man/img_bad.jpg")
        for w in of(events, Warning_)
    )
    assert of(events, Error)[0] == Error(message="ZeroDivisionError: division by zero", kind="exception")


def test_sigint_to_the_group():
    events = pipe_run("F5_sigint_group")
    assert [e.kind for e in of(events, Error)] == ["interrupted", "interrupted"]  # trainer and launcher
    assert of(events, Progress)[-1].step == 1 and of(events, Progress)[-1].total == 40
    assert of(events, Checkpoint) == []


def test_sigint_to_the_launcher_only_leaves_the_trainer_running():
    events = pipe_run("F5_sigint_launcher_only")
    assert [e.kind for e in of(events, Error)] == ["interrupted"]
    assert of(events, Progress)[-1].step == 40
    assert of(events, Phase)[-1].phase == "finished"


def test_sigint_ignored_run_trains_at_a_steady_rate():
    progress = of(pipe_run("F5x_sigint_ignored_bg"), Progress)
    assert progress[-1].step == 40 and progress[-1].rate == 2.5 and progress[-1].rate_unit == "s/it"


def test_save_state_paths_are_rebuilt_from_wrapped_lines():
    events = pipe_run("F6_resume_phase1_save_state")
    assert of(events, StateSaved) == [
        StateSaved(path="/data/runs/out/F6_phase1/tinylora-step00000001-state", step=1),
        StateSaved(path="/data/runs/out/F6_phase1/tinylora-step00000002-state", step=2),
        StateSaved(path="/data/runs/out/F6_phase1/tinylora-state", step=2),
    ]
    assert "saving" in [p.phase for p in of(events, Phase)]


def test_resume_without_skip_restarts_the_counter():
    progress = of(pipe_run("F6_resume_phase2"), Progress)
    assert progress[0].step == 0 and progress[-1].step == 4 and progress[-1].total == 4


def test_resume_with_skip_reports_absolute_steps():
    events = pipe_run("F6_resume_phase2_skip")
    progress = of(events, Progress)
    assert (progress[0].step, progress[0].total) == (2, 4)  # the bar itself shows 0/2
    assert (progress[-1].step, progress[-1].total) == (4, 4)
    assert [c.step for c in of(events, Checkpoint)] == [4, None]


def test_resume_past_epoch_one_corrects_file_steps():
    """After skipping whole epochs (docs/sd-scripts.md#step-counter-after-a-resume), sd-scripts' global_step restarts at the remainder."""
    parser = OutputParser()
    stdout = (
        b"running training / x\n  num batches per epoch / y: 10\n  gradient accumulation steps / z = 1\n"
        b"  total optimization steps / w: 40\n"
    )
    stderr = (
        "2026-11-25 09:42:09 INFO     skipping 25 steps / 25ステップをスキップします   train_network.py:1265\n"
        "                    INFO     skipping epoch 1 because initial_step (multiplied) is 25  train_network.py:1342\n"
        "                    INFO     skipping epoch 2 because initial_step (multiplied) is 15  train_network.py:1342\n"
        "\rsteps:   0%|          | 0/35 [00:00<?, ?it/s]"
        "\rsteps:   3%|▎         | 1/35 [00:02<01:10,  2.00s/it, avr_loss=0.5]\n"
    ).encode()
    events = parser.feed("stdout", stdout) + parser.feed("stderr", stderr)
    events += parser.feed("stdout", b"\nsaving checkpoint: /o/x-step00000010.safetensors\n") + parser.close()
    progress = of(events, Progress)
    assert [(p.step, p.total) for p in progress] == [(25, 40), (26, 40)]
    assert of(events, Checkpoint) == [Checkpoint(path="/o/x-step00000010.safetensors", step=30)]


def test_unwrapped_records_with_wide_columns():
    line = (
        "2026-11-25 09:39:51 INFO     save train state to /very/long/output/dir/with a space/face-step00000500-state/"
        "train_state.json at epoch 3 step 500" + " " * 20 + "train_network.py:946\n"
    )
    done = (
        "                    INFO     Random states saved in /very/long/output/dir/with a space/face-step00000500-state"
        "/random_states_0.pkl   checkpointing.py:170\n"
    )
    parser = OutputParser()
    events = parser.feed("stderr", line.encode()) + parser.flush()
    assert of(events, StateSaved) == []  # train_state.json comes first; the state is not complete yet
    events = parser.feed("stderr", done.encode()) + parser.close()
    assert of(events, StateSaved) == [
        StateSaved(path="/very/long/output/dir/with a space/face-step00000500-state", step=500)
    ]


def test_a_state_save_cut_short_is_not_reported():
    text = (
        "2026-11-25 09:39:51 INFO     save train state to /o/face-step00000002-state/train_state.json at epoch 1 "
        'step 2   train_network.py:946\nTraceback (most recent call last):\n  File "x.py", line 1\nKeyboardInterrupt\n'
    )
    parser = OutputParser()
    events = parser.feed("stderr", text.encode()) + parser.close()
    assert of(events, StateSaved) == [] and of(events, Error)[0].kind == "interrupted"


def test_crlf_split_across_reads_and_redraw_without_newline():
    parser = OutputParser()
    first = parser.feed("stderr", b"\rsteps:  50%|#####     | 2/4 [00:08<00:08,  4.17s/it, avr_loss=1.24]\r")
    assert [(p.step, p.avr_loss) for p in of(first, Progress)] == [(2, 1.24)]  # no waiting for the next read
    second = parser.feed("stderr", b"\n\rsteps:  75%|#######   | 3/4 [00:11<00:03,  3.70s/it, avr_loss=1.23]")
    assert [p.step for p in of(second, Progress)] == [3]
    epoch = parser.feed("stdout", b"\r\nepoch 2/3\r") + parser.feed("stdout", b"\n")
    assert of(epoch, Epoch) == [Epoch(epoch=2, total=3)]


def test_utf8_split_inside_a_character():
    data = "                    WARNING  no regularization images / 正則化画像が見つかりませんでした   train_util.py:2167\n".encode()
    cut = data.index("正".encode()) + 1
    parser = OutputParser()
    events = parser.feed("stderr", data[:cut]) + parser.feed("stderr", data[cut:]) + parser.close()
    assert of(events, Warning_) == [Warning_(message="no regularization images")]


def test_bar_variants():
    parser = OutputParser()
    data = (
        "\rsteps:  17%|█▋        | 1/6 [00:00<00:00,  6.44it/s, avr_loss=0.0853]"
        "\rsteps:  33%|###3      | 2/6 [1:02:03<2:04:06, 1861.50s/it, Average key norm=0.12, Keys Scaled=0, avr_loss=0.07]"
        "\rsteps:  50%|█████     | 3/6 [00:00<?, ?it/s]"
    ).encode()
    progress = of(parser.feed("stderr", data), Progress)
    assert progress[0] == Progress(
        step=1, total=6, rate=6.44, rate_unit="it/s", elapsed_s=0.0, eta_s=0.0, avr_loss=0.0853
    )
    assert (progress[1].elapsed_s, progress[1].eta_s, progress[1].avr_loss) == (3723.0, 7446.0, 0.07)
    assert progress[2].rate is None and progress[2].eta_s is None


def test_nan_loss_is_reported_once():
    parser = OutputParser()
    events = parser.feed(
        "stderr",
        "\rsteps:  50%|█████     | 2/4 [00:08<00:08,  4.17s/it, avr_loss=nan]"
        "\rsteps:  75%|███████▌  | 3/4 [00:11<00:03,  3.70s/it, avr_loss=inf]".encode(),
    )
    assert math.isnan(of(events, Progress)[0].avr_loss) and of(events, Progress)[1].avr_loss == math.inf
    assert [(e.kind, e.message) for e in of(events, Error)] == [("nan", "the training loss is nan at step 2")]


def test_record_glued_after_the_last_bar():
    data = (
        "\rsteps: 100%|██████████| 4/4 [00:13<00:00,  3.40s/it, avr_loss=1.12]2026-11-25 09:15:50 INFO     "
        "model saved.                  train_network.py:1729\n"
    ).encode()
    parser = OutputParser()
    events = parser.feed("stderr", data) + parser.close()
    assert of(events, Progress)[0].step == 4 and of(events, Phase)[-1] == Phase(phase="finished")


@pytest.mark.parametrize(
    "tail, kind",
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB.", "oom"),
        ("RuntimeError: CUDA error: out of memory", "oom"),
        ("ModuleNotFoundError: No module named 'voluptuous'", "missing_package"),
        ("ImportError: No xformers / xformersがインストールされていないようです", "missing_package"),
        ("toml.decoder.TomlDecodeError: Unbalanced quotes (line 3 column 9 char 40)", "config_rejected"),
        ("OSError: Cannot load model foo/bar: model is not cached locally", "model_missing"),
        ("subprocess.CalledProcessError: Command '['python']' died with <Signals.SIGKILL: 9>.", "killed"),
        ("ValueError: Tried to find /x but folder does not exist", "exception"),
    ],
)
def test_traceback_classes(tail, kind):
    data = f'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n    f()\n    ^^^\n{tail}\n'
    events = OutputParser().feed("stderr", data.encode())
    assert of(events, Error) == [Error(message=tail, kind=kind)]


def test_model_missing_log_record_and_argparse_error():
    parser = OutputParser()
    data = (
        "                    ERROR    model is not found as a file or in Hugging Face, perhaps file name is wrong? "
        "/ 指定したモデル名のファイル、またはHugging Faceのモデルが見つかりません: /x.safetensors   train_util.py:5545\n"
        "usage: train_network.py [-h]\ntrain_network.py: error: unrecognized arguments: --bogus\n"
    ).encode()
    events = parser.feed("stderr", data) + parser.close()
    assert [e.kind for e in of(events, Error)] == ["model_missing", "config_rejected"]


def test_python_warnings_but_not_deprecation_noise():
    data = (
        b'/x/deepspeed_utils.py:131: SyntaxWarning: "is not" with a literal.\n'
        b"/x/pipe.py:221: FutureWarning: The configuration file of this scheduler\n"
        b"/x/a.py:9: UserWarning: something you should know\n"
    )
    assert of(OutputParser().feed("stderr", data), Warning_) == [
        Warning_(message="UserWarning: something you should know")
    ]


def test_never_raises_on_garbage():
    rng = random.Random(5)
    parser = OutputParser()
    for _ in range(300):
        parser.feed(rng.choice(["stdout", "stderr"]), bytes(rng.randrange(256) for _ in range(rng.randrange(200))))
    parser.close()


def test_helpers():
    assert strip_ansi("\x1b[2;36m2026\x1b[0m \x1b]8;id=1;file:///x.py\x1b\\x.py\x1b]8;;\x1b\\\x1b[A") == "2026 x.py"
    assert english("no regularization images / 正則化画像が見つかりませんでした") == "no regularization images"
    assert english("a / b") == "a / b"
    assert step_from_file_name("/o/face-step00000500.safetensors") == 500
    assert step_from_file_name("/o/face-step00000500-state") == 500
    assert step_from_file_name("/o/face-000003.safetensors") is None
