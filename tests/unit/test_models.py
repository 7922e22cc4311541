from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import errors as hub_errors
from sd15_stub import write_sd15_stub

from kohya_wrap.errors import ModelError
from kohya_wrap.models import resolve_base_model, resolve_tokenizer


def safetensors_file(path: Path) -> Path:
    return write_sd15_stub(path)


def tokenizer_dir(root: Path) -> Path:
    sub = root / "openai_clip-vit-large-patch14"
    sub.mkdir(parents=True)
    (sub / "vocab.json").write_text("{}")
    (sub / "merges.txt").write_text("#version: 0.2\n")
    return root


class FakeHub:
    """The Hugging Face Hub at the network boundary: a cache that may hold files, and a network that may fail."""

    def __init__(self, tmp_path: Path, cached=(), remote=(), failure: Exception | None = None):
        self.store = tmp_path / "hub-store"
        self.store.mkdir(exist_ok=True)
        self.cached, self.remote, self.failure = set(cached), set(remote), failure
        self.downloads: list[tuple[str, str]] = []

    def hf_hub_download(self, repo_id, filename, local_files_only=False, **_):
        key = f"{repo_id}/{filename}"
        if key in self.cached:
            return str(self._file(filename))
        if local_files_only:
            raise hub_errors.LocalEntryNotFoundError(f"{key} not in cache")
        if self.failure is not None:
            raise self.failure
        if key not in self.remote:
            raise hub_errors.EntryNotFoundError(f"{key} not found")
        self.downloads.append((repo_id, filename))
        self.cached.add(key)
        return str(self._file(filename))

    def list_repo_files(self, repo_id, **_):
        if self.failure is not None:
            raise self.failure
        return sorted(k[len(repo_id) + 1 :] for k in self.remote if k.startswith(repo_id + "/"))

    def _file(self, filename):
        path = self.store / filename
        if filename.endswith(".safetensors"):
            safetensors_file(path)
        else:
            path.write_text("{}")
        return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    def install(**kw):
        fake = FakeHub(tmp_path, **kw)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
        return fake

    return install


def test_local_safetensors_file(tmp_path):
    path = safetensors_file(tmp_path / "sd15.safetensors")
    model = resolve_base_model(str(path))
    assert (model.path, model.kind, model.warnings) == (path, "file", ())


def test_broken_safetensors_file_is_reported(tmp_path):
    path = tmp_path / "half.safetensors"
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(ModelError, match="is not a safetensors file"):
        resolve_base_model(str(path))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_checkpoints_need_allow_pickle(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"PK")
    with pytest.raises(ModelError) as e:
        resolve_base_model(str(path))
    assert "loading it runs any code it contains" in e.value.message and "--allow-pickle" in e.value.hint
    model = resolve_base_model(str(path), allow_pickle=True)
    assert model.path == path and "--allow-pickle" in model.warnings[0]


def test_diffusers_folder_is_allowed_with_a_warning(tmp_path):
    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    model = resolve_base_model(str(folder))
    assert model.kind == "folder" and "imports the classes" in model.warnings[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a diffusers model"):
        resolve_base_model(str(tmp_path / "empty"))


def test_missing_local_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        resolve_base_model(str(tmp_path / "nope.safetensors"))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_base_model("./models/nope.safetensors")


def test_hub_repo_id_maps_to_its_single_file_checkpoint(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    fake = hub(remote={"stable-diffusion-v1-5/stable-diffusion-v1-5/v1-5-pruned-emaonly.safetensors"})
    model = resolve_base_model("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert model.kind == "hub" and model.path.name == "v1-5-pruned-emaonly.safetensors"
    assert fake.downloads == [("stable-diffusion-v1-5/stable-diffusion-v1-5", "v1-5-pruned-emaonly.safetensors")]
    resolve_base_model("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert len(fake.downloads) == 1  # the second time it comes from the cache


def test_hub_file_in_the_cache_works_offline(hub):
    hub(cached={"me/model/weights.safetensors"})
    assert resolve_base_model("me/model/weights.safetensors").path.name == "weights.safetensors"


def test_hub_offline_and_not_cached_says_what_to_do(hub):
    hub(remote={"me/model/weights.safetensors"})
    with pytest.raises(ModelError) as e:
        resolve_base_model("me/model/weights.safetensors")
    assert "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in e.value.message
    assert "--base-model /path/to/model.safetensors" in e.value.hint


@pytest.mark.parametrize(
    "failure, words",
    [
        (hub_errors.GatedRepoError("403 gated"), "is gated on the Hugging Face Hub"),
        (hub_errors.RepositoryNotFoundError("404"), "not found on the Hugging Face Hub"),
        (ConnectionError("Name or service not known"), "download from me/model failed: ConnectionError"),
    ],
)
def test_hub_failures_become_clear_errors(hub, monkeypatch, failure, words):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub(failure=failure)
    with pytest.raises(ModelError) as e:
        resolve_base_model("me/model/w.safetensors")
    assert words in e.value.message and e.value.hint


def test_hub_repo_without_a_single_checkpoint_asks_for_a_file(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub(remote={"me/model/a.safetensors", "me/model/b.safetensors"})
    with pytest.raises(ModelError) as e:
        resolve_base_model("me/model")
    assert "has 2 top-level .safetensors files (a.safetensors, b.safetensors)" in e.value.message


def test_hub_pickle_checkpoint_is_refused_too(hub):
    hub(cached={"me/model/model.ckpt"})
    with pytest.raises(ModelError, match="pickle"):
        resolve_base_model("me/model/model.ckpt")


def test_tokenizer_from_a_given_folder(tmp_path):
    root = tokenizer_dir(tmp_path / "tok")
    assert resolve_tokenizer(root) == root.resolve()


def test_tokenizer_folder_given_one_level_too_deep(tmp_path):
    root = tokenizer_dir(tmp_path / "tok")
    with pytest.raises(ModelError) as e:
        resolve_tokenizer(root / "openai_clip-vit-large-patch14")
    assert "give its parent folder" in e.value.hint


def test_tokenizer_offline_without_a_cache_says_what_to_do(hub, tmp_path):
    hub()
    with pytest.raises(ModelError) as e:
        resolve_tokenizer(tmp_path / "empty")
    assert "does not exist and openai/clip-vit-large-patch14 cannot be fetched" in e.value.message
    assert "--tokenizer-cache-dir DIR" in e.value.hint


def test_tokenizer_is_fetched_once_into_our_cache(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    files = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
    fake = hub(remote={f"openai/clip-vit-large-patch14/{f}" for f in files})
    root = resolve_tokenizer(None)
    assert sorted(p.name for p in (root / "openai_clip-vit-large-patch14").iterdir()) == sorted(files)
    assert sorted(f for _, f in fake.downloads) == sorted(files)
    assert resolve_tokenizer(None) == root and len(fake.downloads) == len(files)


def test_a_planned_local_model_that_is_gone_stops_with_exit_11(tmp_path):
    from kohya_wrap.errors import ExitCode, ModelGone
    from kohya_wrap.models import ensure_base_model

    path = safetensors_file(tmp_path / "sd15.safetensors")
    assert ensure_base_model(str(path), path, "file") == path
    path.unlink()
    with pytest.raises(ModelGone, match="no longer exists") as e:
        ensure_base_model(str(path), path, "file")
    assert e.value.exit_code == ExitCode.TRAIN_MODEL_MISSING


def test_a_hub_model_whose_cache_was_cleared_is_fetched_again(tmp_path, hub, monkeypatch):
    from kohya_wrap.errors import ModelGone
    from kohya_wrap.models import ensure_base_model

    repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    gone = tmp_path / "old-cache" / "v1-5-pruned-emaonly.safetensors"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fake = hub(remote={f"{repo}/v1-5-pruned-emaonly.safetensors"})
    fresh = ensure_base_model(repo, gone, "hub")
    assert fresh.is_file() and fresh != gone and fake.downloads == [(repo, "v1-5-pruned-emaonly.safetensors")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub()  # an empty cache, offline
    with pytest.raises(ModelGone, match="cannot be fetched again"):
        ensure_base_model(repo, gone, "hub")


def test_a_cleared_tokenizer_cache_is_filled_again_but_a_users_folder_is_not(tmp_path, hub, monkeypatch):
    from kohya_wrap.errors import ModelGone
    from kohya_wrap.models import default_tokenizer_cache_dir, ensure_tokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub(
        remote={
            f"openai/clip-vit-large-patch14/{n}"
            for n in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
        }
    )
    ours = default_tokenizer_cache_dir()
    assert ensure_tokenizer(ours) == ours and (ours / "openai_clip-vit-large-patch14" / "vocab.json").is_file()
    with pytest.raises(ModelGone, match="no longer exists"):
        ensure_tokenizer(tmp_path / "my-tokenizer")
