"""The base model and the CLIP tokenizer a run needs, found locally or fetched from the Hugging Face Hub.

Only safetensors files are accepted without asking: sd-scripts loads any other checkpoint with
torch.load(weights_only=False), which runs whatever code the pickle holds (library/model_util.py: load_checkpoint_with_text_encoder_conversion; docs/sd-scripts.md#trust-rules). A diffusers folder is
allowed with a warning, because diffusers imports the classes its model_index.json names.
Everything fetched goes to the Hugging Face cache, so once cached a run needs no network.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.errors import ModelError, ModelGone
from kohya_wrap.fsutil import user_cache_dir
from kohya_wrap.safetensors_header import check_complete
from kohya_wrap.sdscripts.base_model import CLIP_TOKENIZER, read_safetensors_keys, sd15_key_problem

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Repositories whose single-file checkpoint we know; others must have exactly one top-level .safetensors.
KNOWN_SINGLE_FILES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "v1-5-pruned-emaonly.safetensors",
    "runwayml/stable-diffusion-v1-5": "v1-5-pruned-emaonly.safetensors",
}
OFFLINE_HINT = (
    "download it once with network access (unset HF_HUB_OFFLINE), or give a local file: "
    "--base-model /path/to/model.safetensors"
)


@dataclass(frozen=True)
class BaseModel:
    source: str  # as the user gave it
    path: Path | None  # None: a hub model, fetched by train on the machine that trains
    kind: str  # "file", "folder" (diffusers) or "hub"
    warnings: tuple[str, ...] = ()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", ".", "~"))
        or "\\" in source
        or Path(source).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)
        and source.count("/") != 2
    )


def _check_safetensors(path: Path) -> None:
    """A safetensors file (an 8-byte little-endian header length, a JSON header) whose tensor names are SD1.5's.

    Only the header is read (sdscripts.sd15: the keys library/model_util.py loads), so a 4 GB model is
    checked in milliseconds and a file of the wrong architecture is refused before any run starts.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise ModelError(f"base model {path} cannot be read: {e}") from None
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > path.stat().st_size:
        raise ModelError(
            f"base model {path} is not a safetensors file (bad header)",
            "download it again; an interrupted download leaves a broken file",
        )
    try:
        keys = read_safetensors_keys(path)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"base model {path} is not a safetensors file ({e})",
            "download it again; an interrupted download leaves a broken file",
        ) from None
    try:
        check_complete(path)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"base model {path} is incomplete: {e}",
            "an interrupted download leaves a file like this; get it again (download it anew)",
        ) from None
    problem = sd15_key_problem(keys)
    if problem:
        raise ModelError(
            f"base model {path} is not a Stable Diffusion 1.5 checkpoint: {problem}",
            "give an SD 1.5 single-file checkpoint (.safetensors), e.g. "
            "stable-diffusion-v1-5/stable-diffusion-v1-5; kohya-wrap trains SD 1.5 LoRAs only",
        )


def _check_file(path: Path, source: str, allow_pickle: bool, kind: str) -> BaseModel:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        _check_safetensors(path)
        return BaseModel(source, path, kind)
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(
                f"base model {path} is a pickle checkpoint ({suffix}): loading it runs any code it contains",
                "use a .safetensors file, or pass --allow-pickle if you trust where it came from",
            )
        return BaseModel(source, path, kind, (f"{path.name} is a pickle checkpoint, loaded because of --allow-pickle",))
    raise ModelError(f"base model {path} is not a .safetensors file", "give an SD 1.5 checkpoint in safetensors format")


def check_base_model(source: str, *, allow_pickle: bool = False) -> BaseModel:
    """plan's check, which never touches the network: a local file or folder is checked where it is;
    a Hugging Face repo id is checked for its form, and train fetches it (ensure_base_model)."""
    if Path(source).expanduser().exists() or _looks_like_path(source):
        return resolve_base_model(source, allow_pickle=allow_pickle)
    repo, filename = _split_repo(source)
    if filename is not None and Path(filename).suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelError(
            f"base model {source} is a pickle checkpoint ({Path(filename).suffix}): loading it runs any code it contains",
            "use a .safetensors file, or pass --allow-pickle if you trust where it came from",
        )
    return BaseModel(source, None, "hub")


def _local_tokenizer(target: Path) -> bool:
    """The folder holds sd-scripts' tokenizer folder; a folder holding the files themselves is an error."""
    if _has_tokenizer(target):
        return True
    if all((target / f).is_file() for f in CLIP_TOKENIZER.required_files):
        raise ModelError(
            f"tokenizer cache {target} holds tokenizer files directly",
            f"give its parent folder, with the tokenizer in {CLIP_TOKENIZER.folder(target).name}/ "
            f"(the layout sd-scripts reads), or move the files into {CLIP_TOKENIZER.folder(target)}",
        )
    return False


def check_tokenizer_dir(cache_dir: str | Path) -> Path:
    """A --tokenizer-cache-dir must hold sd-scripts' CLIP tokenizer folder already (plan fetches nothing)."""
    target = Path(cache_dir).expanduser().resolve()
    if _local_tokenizer(target):
        return target
    raise ModelError(
        f"CLIP tokenizer: {CLIP_TOKENIZER.folder(target)} does not exist (--tokenizer-cache-dir {target})",
        f"give a folder whose {CLIP_TOKENIZER.folder(target).name}/ holds a saved CLIPTokenizer "
        "(vocab.json, merges.txt), or leave the option out: train then fills kohya-wrap's own cache",
    )


def resolve_base_model(source: str, *, allow_pickle: bool = False) -> BaseModel:
    """A local file or diffusers folder, or a Hugging Face repo id (fetched into the Hub cache)."""
    path = Path(source).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelError(
                    f"base model {path} is a folder but not a diffusers model (no model_index.json)",
                    "give a .safetensors file or a diffusers model folder",
                )
            return BaseModel(
                source,
                path,
                "folder",
                (
                    f"{path} is a diffusers folder: loading it imports the classes its model_index.json names; "
                    "use it only if you trust where it came from",
                ),
            )
        if not path.is_file():
            # a FIFO, socket or device: reading its header would block or never end
            raise ModelError(
                f"base model {path} is not a regular file (a pipe, socket or device)",
                "give the .safetensors file itself, or a diffusers model folder",
            )
        return _check_file(path, source, allow_pickle, "file")
    if _looks_like_path(source):
        raise ModelError(f"base model {path} does not exist", "check the path, or give a Hugging Face repo id")
    return _from_hub(source, allow_pickle)


def ensure_base_model(source: str, path: Path | None, kind: str) -> Path:
    """train's pre-flight: the model file to load, on this machine, before the trainer starts.

    A hub model is taken from the Hugging Face cache or downloaded (with a progress bar), possibly to
    another snapshot path than before (a new Colab runtime, a cleared cache); a local file or folder
    that is gone cannot be replaced. Failures are ModelGone (exit 11), raised within seconds offline.
    """
    if path is not None and path.exists():
        if path.is_file() and path.suffix.lower() == ".safetensors":
            try:
                check_complete(path)
            except (OSError, ValueError) as e:
                raise ModelGone(
                    f"base model {path} is incomplete: {e}",
                    "an interrupted download or copy leaves a file like this; get it again (download it anew), "
                    "then train this run directory again",
                ) from None
        return path
    if kind == "hub":
        try:
            # the plan already accepted this file type (a pickle only with --allow-pickle)
            fetched = resolve_base_model(source, allow_pickle=True).path
        except ModelError as e:
            what = (
                f"its cached file {path} is gone and it cannot be fetched again"
                if path is not None
                else "it is not in the Hugging Face cache and cannot be fetched"
            )
            raise ModelGone(f"base model {source}: {what} ({e.message})", e.hint) from None
        assert fetched is not None
        return fetched
    raise ModelGone(
        f"base model {path} (planned from {source!r}) no longer exists",
        "put the file back where it was, or plan a new run with --base-model",
    )


def ensure_tokenizer(cache_dir: Path | None) -> Path:
    """train's pre-flight: the tokenizer folder to pass; kohya-wrap's own cache (None) is filled when empty."""
    if cache_dir is None:
        cache_dir = default_tokenizer_cache_dir()
    if _has_tokenizer(cache_dir):
        return cache_dir
    if cache_dir == default_tokenizer_cache_dir():
        try:
            return resolve_tokenizer(None)
        except ModelError as e:
            raise ModelGone(e.message, e.hint) from None
    raise ModelGone(
        f"CLIP tokenizer: {CLIP_TOKENIZER.folder(cache_dir)} (planned with --tokenizer-cache-dir) no longer exists",
        "put the tokenizer folder back, or plan a new run",
    )


def _split_repo(source: str) -> tuple[str, str | None]:
    parts = source.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ModelError(f"base model {source!r} is neither an existing file nor a Hugging Face repo id (owner/name)")
    repo = "/".join(parts[:2])
    filename = "/".join(parts[2:]) or KNOWN_SINGLE_FILES.get(repo)
    return repo, filename


def _hub_error(e: Exception, what: str, repo: str) -> ModelError:
    from huggingface_hub import errors

    if isinstance(e, errors.GatedRepoError):
        return ModelError(
            f"{what}: {repo} is gated on the Hugging Face Hub",
            f"accept its terms at https://huggingface.co/{repo}, then log in (`hf auth login` or HF_TOKEN)",
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return ModelError(
            f"{what}: repository {repo} not found on the Hugging Face Hub (or private)",
            "check the repo id; for a private repo, log in (`hf auth login` or HF_TOKEN)",
        )
    # Offline first: LocalEntryNotFoundError is an EntryNotFoundError, and offline a missing file is not a wrong name.
    if isinstance(e, (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError)) or _offline():
        why = "HF_HUB_OFFLINE is set" if _offline() else "this machine is offline (the Hub cannot be reached)"
        return ModelError(f"{what}: {repo} is not in the Hugging Face cache and {why}", OFFLINE_HINT)
    if isinstance(e, (errors.EntryNotFoundError, errors.RevisionNotFoundError)):
        return ModelError(f"{what}: {e}", f"check the file name in https://huggingface.co/{repo}/tree/main")
    return ModelError(
        f"{what}: download from {repo} failed: {type(e).__name__}: {e}",
        "check the network connection, then run again (downloads resume)",
    )


def _hub_file(repo: str, filename: str, what: str) -> Path:
    """The cached file, without network if it is cached; else a download with a progress bar."""
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename, local_files_only=True))
    except Exception:  # noqa: BLE001  not cached (any reason): try the network below
        pass
    if _offline():
        raise ModelError(
            f"{what}: {repo}/{filename} is not in the Hugging Face cache and HF_HUB_OFFLINE is set", OFFLINE_HINT
        )
    try:
        return Path(huggingface_hub.hf_hub_download(repo, filename))
    except Exception as e:  # noqa: BLE001  every failure becomes a message naming the repo
        raise _hub_error(e, what, repo) from None


def _from_hub(source: str, allow_pickle: bool) -> BaseModel:
    repo, filename = _split_repo(source)
    if filename is None:
        filename = _single_safetensors(repo)
    path = _hub_file(repo, filename, "base model")
    model = _check_file(path, source, allow_pickle, "hub")
    return model


def _single_safetensors(repo: str) -> str:
    import huggingface_hub

    if _offline():
        raise ModelError(
            f"base model: cannot list the files of {repo} with HF_HUB_OFFLINE set",
            f"name the file: --base-model {repo}/<file>.safetensors",
        )
    try:
        files = huggingface_hub.list_repo_files(repo)
    except Exception as e:  # noqa: BLE001
        raise _hub_error(e, "base model", repo) from None
    top = [f for f in files if "/" not in f and f.endswith(".safetensors")]
    if len(top) != 1:
        listed = ", ".join(top) or "none"
        raise ModelError(
            f"base model: {repo} has {len(top)} top-level .safetensors files ({listed})",
            f"name one: --base-model {repo}/<file>.safetensors",
        )
    return top[0]


def default_tokenizer_cache_dir() -> Path:
    return user_cache_dir() / "tokenizers"


def _has_tokenizer(cache_dir: Path) -> bool:
    sub = CLIP_TOKENIZER.folder(cache_dir)
    return all((sub / f).is_file() for f in CLIP_TOKENIZER.required_files)


def cached_tokenizer() -> str | None:
    """Where the CLIP tokenizer train would use is already on this machine (kohya-wrap's own cache, or the
    Hugging Face cache it is copied from), or None: then train downloads it, and offline it cannot."""
    if _has_tokenizer(default_tokenizer_cache_dir()):
        return str(default_tokenizer_cache_dir())
    import huggingface_hub

    found = []
    for name in CLIP_TOKENIZER.files:
        try:
            found.append(Path(huggingface_hub.hf_hub_download(CLIP_TOKENIZER.repo, name, local_files_only=True)))
        except Exception:  # noqa: BLE001  not cached, for any reason
            return None
    return f"the Hugging Face cache ({found[0].parent})"


def resolve_tokenizer(cache_dir: str | Path | None = None) -> Path:
    """A tokenizer_cache_dir holding sd-scripts' CLIP tokenizer folder, so the trainer needs no network.

    cache_dir: the user's folder; it must already hold the tokenizer, or it is filled from the Hub.
    None: kohya-wrap's own cache, filled from the Hub the first time.
    """
    target = Path(cache_dir).expanduser().resolve() if cache_dir else default_tokenizer_cache_dir()
    if _local_tokenizer(target):
        return target
    downloaded = []
    for name in CLIP_TOKENIZER.files:
        try:
            downloaded.append(_hub_file(CLIP_TOKENIZER.repo, name, "CLIP tokenizer"))
        except ModelError as e:
            raise ModelError(
                f"CLIP tokenizer: {CLIP_TOKENIZER.folder(target)} does not exist and {CLIP_TOKENIZER.repo} cannot be fetched ({e.message})",
                f"run once with network access, or give --tokenizer-cache-dir DIR where DIR/{CLIP_TOKENIZER.folder(target).name}/ "
                "holds a saved CLIPTokenizer (vocab.json, merges.txt)",
            ) from None
    sub = CLIP_TOKENIZER.folder(target)
    tmp = sub.with_name(sub.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src in downloaded:
        shutil.copyfile(src, tmp / src.name)
    if sub.exists():
        shutil.rmtree(sub)
    os.replace(tmp, sub)
    return target
