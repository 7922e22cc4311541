"""Bad input gets exit 1 and a sentence, never exit 3: every file of a finished run directory (plan.json,
run.json, events.jsonl, score.json), a sweep.json and a LoRA's header and metadata, damaged in the ways
a hand edit, a crash or a hostile file damages them (nesting bombs, wrong types, null lines, torn bytes),
read by every command that reads them."""

from __future__ import annotations

import json
import random
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "fakes"))

from run_dir import make_run_dir  # noqa: E402

from kohya_wrap.cli import cli  # noqa: E402
from kohya_wrap.errors import ExitCode  # noqa: E402
from kohya_wrap.train.runner import run_training  # noqa: E402

BOMB = "[" * 100_000 + "]" * 100_000
WRONG_VALUES: list[Any] = [None, [], {}, "x", -1, True, 1.5, [1, 2], {"a": None}, 10**30]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, fake_checkout: Path) -> Path:
    import os

    os.environ["KOHYA_WRAP_SD_SCRIPTS"] = str(fake_checkout)
    root = tmp_path_factory.mktemp("fuzz")
    run_dir = make_run_dir(root, max_train_steps=4, save_every_n_steps=2)
    result = run_training(run_dir)
    assert result.outcome == "finished", result.tail
    lora = run_dir / "output" / "face.safetensors"
    score = {
        "schema": 1,
        "checkpoints": [{"step": 4, "path": str(lora), "likeness": 0.5}],
        "recommended": {"step": 4, "checkpoint": lora.name, "likeness": 0.5, "matches": 3, "samples": 4},
        "reason": "the most likeness",
    }
    (run_dir / "score.json").write_text(json.dumps(score))
    return run_dir


def fresh_copy(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, its absolute paths pointing at the copy (plan.json, run.json)."""
    root = tmp_path / "runs"
    shutil.copytree(finished_run.parent, root, symlinks=True)
    run_dir = root / finished_run.name
    for name in ("plan.json", "run.json", "score.json"):
        path = run_dir / name
        path.write_text(path.read_text().replace(str(finished_run.parent), str(root)))
    return run_dir


def commands(run_dir: Path, tmp_path: Path) -> list[list[str]]:
    lora = run_dir / "output" / "face.safetensors"
    return [
        ["status", str(run_dir)],
        ["status", str(run_dir), "--json"],
        ["runs", str(run_dir.parent)],
        ["runs", str(run_dir.parent), "--json"],
        ["report", str(run_dir), "-o", str(tmp_path / "report.html")],
        ["train", str(run_dir)],
        ["train", str(run_dir), "--resume"],
        ["export", str(run_dir), "-o", str(tmp_path / "exported")],
        ["inspect", str(lora)],
        ["presets", "export", str(run_dir), "-o", str(tmp_path / "preset.toml")],
    ]


def run_all(run_dir: Path, tmp_path: Path, what: str) -> None:
    for args in commands(run_dir, tmp_path):
        result = CliRunner().invoke(cli, args)
        out = result.output
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        assert result.exit_code != ExitCode.UNEXPECTED and not crashed and "Traceback" not in out, (
            f"{what}: kohya-wrap {' '.join(args[:1])} exited {result.exit_code}: {out[-800:]} {result.exception!r}"
        )
        if result.exit_code not in (0, ExitCode.WARNINGS):
            assert out.strip(), f"{what}: {args[0]} failed without a sentence"
        for leftover in (tmp_path / "exported").glob("*") if (tmp_path / "exported").is_dir() else ():
            leftover.unlink()
        (tmp_path / "preset.toml").unlink(missing_ok=True)


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _paths(doc: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    """Every key path of a JSON document, to depth 3."""
    out: list[tuple[Any, ...]] = []
    if depth > 3:
        return out
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append((*prefix, k))
            out += _paths(v, (*prefix, k), depth + 1)
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:2]):
            out.append((*prefix, i))
            out += _paths(v, (*prefix, i), depth + 1)
    return out


WHOLE_FILE_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "bomb": lambda _b: BOMB.encode(),
    "null": lambda _b: b"null",
    "array": lambda _b: b"[1, 2]",
    "string": lambda _b: b'"run"',
    "torn": lambda b: b[: len(b) // 2],
    "not utf-8": lambda b: b"\xff\xfe" + b,
    "empty": lambda _b: b"",
}


@pytest.mark.parametrize("name", ["plan.json", "run.json", "score.json", "events.jsonl"])
@pytest.mark.parametrize("damage", list(WHOLE_FILE_DAMAGE))
def test_a_damaged_run_directory_file_is_never_exit_3(finished_run, tmp_path, name, damage):
    run_dir = fresh_copy(finished_run, tmp_path)
    path = run_dir / name
    path.write_bytes(WHOLE_FILE_DAMAGE[damage](path.read_bytes()))
    run_all(run_dir, tmp_path, f"{name} {damage}")


@pytest.mark.parametrize("name", ["plan.json", "run.json", "score.json"])
def test_wrong_value_types_in_run_directory_files_are_never_exit_3(finished_run, tmp_path, name):
    rng = random.Random(name)
    doc = json.loads((finished_run / name).read_text())
    cases = _paths(doc)
    rng.shuffle(cases)
    for i, key_path in enumerate(cases[:40]):
        value = WRONG_VALUES[i % len(WRONG_VALUES)]
        case_dir = tmp_path / f"case{i}"
        case_dir.mkdir()
        run_dir = fresh_copy(finished_run, case_dir)
        current = json.loads((run_dir / name).read_text())
        (run_dir / name).write_text(json.dumps(_replace(current, key_path, value)))
        run_all(run_dir, case_dir, f"{name} {key_path} = {value!r}")
        shutil.rmtree(case_dir)


@pytest.mark.parametrize(
    "line",
    [
        "null",
        "[1, 2]",
        "42",
        '"progress"',
        BOMB,
        '{"type": "progress", "step": "x", "total": 4}',
        '{"type": "checkpoint", "path": 5, "step": 2}',
        '{"type": "finished", "outcome": ["finished"], "exit_code": 0, "returncode": 0}',
        '{"type": "epoch", "epoch": null, "total": 1}',
        '{"type": ["progress"]}',
        '{"type": "summary", "train_images": true}',
        "\xff garbage",
        b"\xff\xfe not UTF-8 \xe6",
    ],
)
def test_a_bad_line_in_events_jsonl_never_breaks_runs_nor_status(finished_run, tmp_path, line):
    run_dir = fresh_copy(finished_run, tmp_path)
    other = fresh_copy(finished_run, tmp_path / "second")
    shutil.move(str(other), str(run_dir.parent / "other"))
    events = run_dir / "events.jsonl"
    lines = events.read_bytes().splitlines()
    lines.insert(len(lines) // 2, line if isinstance(line, bytes) else line.encode())
    events.write_bytes(b"\n".join(lines) + b"\n")
    run_all(run_dir, tmp_path, f"events line {line[:30]!r}")
    result = CliRunner().invoke(cli, ["runs", str(run_dir.parent), "--json"])
    rows = json.loads(result.stdout)
    assert {r["outcome"] for r in rows} == {"finished"}, rows  # the bad line costs nothing, here or elsewhere


def _rewrite_header(
    lora: Path, change: Callable[[dict[str, Any]], Any] | None = None, raw: bytes | None = None
) -> None:
    data = lora.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = raw if raw is not None else json.dumps(change(header) if change else header).encode()  # type: ignore[misc]
    lora.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + length :])


def _first_tensor(header: dict[str, Any]) -> str:
    return next(k for k in header if k != "__metadata__")


HEADER_DAMAGE: dict[str, Callable[[Path], None]] = {
    "header bomb": lambda p: _rewrite_header(p, raw=BOMB.encode()),
    "header null": lambda p: _rewrite_header(p, raw=b"null"),
    "metadata a list": lambda p: _rewrite_header(p, lambda h: {**h, "__metadata__": [1, 2]}),
    "metadata value a bomb": lambda p: _rewrite_header(
        p, lambda h: {**h, "__metadata__": {**h.get("__metadata__", {}), "ss_tag_frequency": BOMB}}
    ),
    "metadata numbers wrong": lambda p: _rewrite_header(
        p,
        lambda h: {
            **h,
            "__metadata__": {**h.get("__metadata__", {}), "ss_network_dim": "[[[]]]", "ss_steps": "null"},
        },
    ),
    "tensor dtype a number": lambda p: _rewrite_header(
        p, lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "dtype": 5}}
    ),
    "tensor shape a string": lambda p: _rewrite_header(
        p, lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "shape": "4"}}
    ),
    "tensor offsets strings": lambda p: _rewrite_header(
        p, lambda h: {**h, _first_tensor(h): {**h[_first_tensor(h)], "data_offsets": ["0", "x"]}}
    ),
    "truncated data": lambda p: p.write_bytes(p.read_bytes()[:-10]),
    "length too big": lambda p: p.write_bytes(struct.pack("<Q", 2**63) + p.read_bytes()[8:]),
}


@pytest.mark.parametrize("damage", list(HEADER_DAMAGE))
def test_a_damaged_lora_header_is_never_exit_3(finished_run, tmp_path, damage):
    run_dir = fresh_copy(finished_run, tmp_path)
    for lora in (run_dir / "output").glob("*.safetensors"):
        HEADER_DAMAGE[damage](lora)
    run_all(run_dir, tmp_path, damage)


def _sweep_dir(finished_run: Path, tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    run_dir = fresh_copy(finished_run, tmp_path / "src")
    shutil.move(str(run_dir), str(sweep / "runs" / "v1"))
    variant = {
        "name": "v1",
        "run_dir": str(sweep / "runs" / "v1"),
        "dataset": str(tmp_path / "dataset"),
        "values": {"network_dim": 4},
        "status": "done",
        "outcome": "finished",
        "exit_code": 0,
        "recommended_step": 4,
        "final_loss": 0.1,
        "last_step": 4,
        "total_steps": 4,
        "lora_file": None,
        "host": None,
        "device": None,
        "started_at": "2026-11-25T10:00:00Z",
        "ended_at": "2026-11-25T10:01:00Z",
        "error": None,
        "log": None,
    }
    doc = {"schema": 1, "spec": {"grid": {}}, "backend": "local", "updated_at": "x", "variants": [variant]}
    (sweep / "sweep.json").write_text(json.dumps(doc))
    return sweep


def test_a_damaged_sweep_json_is_never_exit_3(finished_run, tmp_path):
    sweep = _sweep_dir(finished_run, tmp_path)
    good = json.loads((sweep / "sweep.json").read_text())
    cases: list[bytes] = [f(json.dumps(good).encode()) for f in WHOLE_FILE_DAMAGE.values()]
    for key_path in _paths(good):
        for value in (None, [1, 2], {"a": 1}, "x", 7):
            cases.append(json.dumps(_replace(good, key_path, value)).encode())
    for i, data in enumerate(cases):
        (sweep / "sweep.json").write_bytes(data)
        for args in (["status", str(sweep)], ["status", str(sweep), "--json"], ["report", str(sweep)]):
            result = CliRunner().invoke(cli, args)
            crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
            assert result.exit_code != ExitCode.UNEXPECTED and not crashed, (
                f"case {i} {data[:120]!r}: {args[0]} -> {result.exit_code} {result.output[-600:]} {result.exception!r}"
            )


@pytest.mark.parametrize("damage", ["null", "torn", "not utf-8", "empty"])
def test_status_of_a_finished_run_with_damaged_events_agrees_with_train(finished_run, tmp_path, damage):
    run_dir = fresh_copy(finished_run, tmp_path)
    events = run_dir / "events.jsonl"
    events.write_bytes(b"\xe6\xff" * 500 if damage == "not utf-8" else WHOLE_FILE_DAMAGE[damage](events.read_bytes()))
    status = json.loads(CliRunner().invoke(cli, ["status", str(run_dir), "--json"]).stdout)
    # run.json says the run finished; train refuses it as finished, and status must not advise training it
    assert status["state"] == "finished" and not status["resumable"], status
    refused = CliRunner().invoke(cli, ["train", str(run_dir)])
    assert refused.exit_code == ExitCode.ERROR and "holds a finished run" in refused.output
