"""The one codec of kohya-wrap's record files: plan.json, run.json, events.jsonl, score.json, sweep.json,
prepare.json, samples.json (and the --json output of every command).

Records are frozen msgspec Structs (`Record`): typed when written, typed when read, with tagged unions
for events and Literal or Enum fields for outcomes. msgspec was chosen over pydantic v2 for start-up:
importing it and building 32 record types with their decoders takes about 19 ms, pydantic 142 ms
(measured side by side on 2026-12-04), and its errors name the field (`Expected int, got str - at
$.steps`). Everything here is the format's one place for:

- NaN and infinities: strict JSON has none, so a non-finite float is written as the string "nan",
  "inf" or "-inf" and read back as the float (loss curves of a diverged run keep their last points);
- the timestamp: `utc_now_text()` (ISO 8601, seconds, "Z") and `parse_time()`;
- bad files: a file that is not JSON, not UTF-8, nests too deeply, or has a wrong field is one
  `RecordError` naming the file, the field and what to do, raised by `decode`/`read` only;
- schemas: `read` takes the schema versions a format can read, each with its record type and the
  upgrade to the current one, so a migration is typed code, not a dict walk.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from kohya_wrap.errors import KohyaWrapError

T = TypeVar("T")

# A value of a TOML file kohya-wrap keeps in a record (an sd-scripts argument, a [kohya_wrap] setting):
# sd-scripts' arguments and ours are scalars or arrays of scalars, never tables.
TomlScalar = str | bool | int | float
TomlValue = TomlScalar | list[TomlScalar]


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A record of one of kohya-wrap's files: frozen, typed, unknown fields ignored on read (a newer
    kohya-wrap may add fields; the schema number says when a field changes meaning)."""


class RecordError(KohyaWrapError):
    """A record file (or line) that cannot be read as its record: the message names the file, the field
    and why; the hint says what to do."""


def utc_now_text(timespec: Literal["seconds", "milliseconds"] = "seconds") -> str:
    """Now, as every record writes a time: ISO 8601 in UTC to the second, "2026-12-04T16:05:32Z" (events
    to the millisecond, "2026-12-04T16:05:32.123Z")."""
    return utc_text(datetime.now(timezone.utc), timespec)


def utc_text(moment: datetime, timespec: Literal["seconds", "milliseconds"] = "seconds") -> str:
    """`moment` (an aware datetime) as utc_now_text writes a time."""
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """A time a record wrote (utc_now_text's form, or an older file's "+00:00" form) as an aware datetime
    (one without a zone is UTC). ValueError for text that is no such time."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _finite(value: Any) -> Any:
    # The one place non-finite floats become strings; msgspec itself would write them as null.
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):  # a tuple field is a JSON array, as json.dumps writes it
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def to_builtins(record: Any) -> Any:
    """A record (or a list or mapping of them) as plain JSON values: what `--json` prints and `encode` writes."""
    return _finite(msgspec.to_builtins(record, enc_hook=_encode_hook))


def encode(record: Any, *, indent: int | None = 2, lead: tuple[str, ...] = ()) -> str:
    """A record as strict JSON text (indented for files people read; indent=None for one line). `lead`:
    fields written before the record's tag and other fields (an events.jsonl line leads with its time)."""
    data = to_builtins(record)
    if lead:
        data = {**{key: data[key] for key in lead}, **data}
    return json.dumps(data, indent=indent, ensure_ascii=False, allow_nan=False)


def decode(data: str | bytes, kind: type[T], *, source: str, hint: str | None = None) -> T:
    """`data` read as a `kind` record; a RecordError naming `source` (a file, or a file and line) when it is
    not JSON or not that record. Non-finite floats written by `encode` are read back as floats."""
    try:
        return msgspec.json.decode(data, type=kind, strict=False, dec_hook=_decode_hook)
    except msgspec.ValidationError as e:
        raise RecordError(f"{source}: {_field_message(e)}", hint) from None
    except msgspec.DecodeError as e:
        raise RecordError(f"{source}: not valid JSON ({e})", hint) from None
    except RecursionError:
        raise RecordError(f"{source}: not valid JSON (its arrays or objects nest too deeply to read)", hint) from None


def convert(value: Any, kind: type[T], *, source: str, hint: str | None = None) -> T:
    """A JSON-shaped value already in memory (another stage's record as builtins) as a `kind` record;
    RecordError naming `source` and the field when it is not one."""
    try:
        return msgspec.convert(value, type=kind, strict=False, dec_hook=_decode_hook)
    except msgspec.ValidationError as e:
        raise RecordError(f"{source}: {_field_message(e)}", hint) from None


class _Schema(msgspec.Struct):
    schema: int = 0


def read(
    path: Path,
    kind: type[T],
    *,
    what: str,
    hint: str | None = None,
    schemas: Mapping[int, tuple[type[Any], Callable[[Any], T]]] | None = None,
    schema: int | None = None,
) -> T:
    """The record in `path`, which holds `what` ("the run's plan"). `schemas`: the older schema numbers this
    format still reads, each with its record type and its upgrade to `kind`; `schema`: the current number.
    A file without a schema field, or of the current schema, is read as `kind`. RecordError for an
    unreadable file, bad JSON, a wrong field or a schema this kohya-wrap does not know."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: missing: {what} is not there", hint) from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror or e})", hint) from None
    if schemas or schema is not None:
        number = decode(data, _Schema, source=str(path), hint=hint).schema
        older = schemas or {}
        if number in older:
            old_kind, upgrade = older[number]
            try:
                return upgrade(decode(data, old_kind, source=str(path), hint=hint))
            except RecordError as e:
                raise RecordError(f"{path}: {e.message}", hint) from None
        if schema is not None and number not in (0, schema):
            known = ", ".join(str(n) for n in sorted({*older, schema}))
            raise RecordError(f"{path}: {what} schema {number}: this kohya-wrap reads schema {known}", hint)
    return decode(data, kind, source=str(path), hint=hint)


def write(path: Path, record: Any) -> None:
    """`record` written to `path` atomically (a half-written file never looks finished)."""
    from kohya_wrap.fsutil import atomic_write_text

    atomic_write_text(path, encode(record) + "\n")


def _encode_hook(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError(f"cannot write {type(value).__name__} values in a record")


def _decode_hook(kind: type[Any], value: Any) -> Any:
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind is object:  # a field that holds any JSON value (a foreign tool's metadata): kept as it came
        return value
    raise NotImplementedError(f"cannot read {kind!r} from {value!r}")


def _field_message(error: msgspec.ValidationError) -> str:
    # msgspec: "Expected `int`, got `str` - at `$.steps.max`": the field first, as the other errors put it.
    text = str(error)
    message, _, where = text.rpartition(" - at ")
    if not message:
        kind = text.removeprefix("Expected `object`, got `")
        return f"holds a JSON {kind.rstrip('`')}, not an object" if kind != text else text.replace("`", "")
    field = where.strip("`").removeprefix("$").lstrip(".") or "the top level"
    return f"{field}: {message.replace('`', '')}"


def as_table(value: object) -> dict[str, object] | None:
    """A parsed TOML (or JSON) value as the table it is, or None for any other value (a scalar, an array):
    a typed conversion, so that code reading a user's file never walks it by isinstance."""
    try:
        return msgspec.convert(value, dict[str, object])
    except msgspec.ValidationError:
        return None
