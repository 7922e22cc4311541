"""Names the Kohya GUI (bmaltais/kohya_ss) and common guides use, and the train_network.py argument each means.

Used only to point an unknown key to the real argument ("epoch" -> max_train_epochs); an alias is never
accepted silently, so a preset always spells sd-scripts' own names.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# alias -> (sd-scripts argument, a note on how the value differs, or "")
ALIASES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "epoch": ("max_train_epochs", ""),
        "epochs": ("max_train_epochs", ""),
        "max_epochs": ("max_train_epochs", ""),
        "lr": ("learning_rate", ""),
        "learningrate": ("learning_rate", ""),
        "batch_size": ("train_batch_size", ""),
        "batch": ("train_batch_size", ""),
        "bs": ("train_batch_size", ""),
        "steps": ("max_train_steps", ""),
        "train_steps": ("max_train_steps", ""),
        "dim": ("network_dim", ""),
        "rank": ("network_dim", ""),
        "network_rank": ("network_dim", ""),
        "alpha": ("network_alpha", ""),
        "optimizer": ("optimizer_type", ""),
        "scheduler": ("lr_scheduler", ""),
        "lr_warmup": ("lr_warmup_steps", "the GUI's lr_warmup is a percentage: write it as 'N%'"),
        "warmup_steps": ("lr_warmup_steps", ""),
        "warmup": ("lr_warmup_steps", ""),
        "te_lr": ("text_encoder_lr", ""),
        "textencoder_lr": ("text_encoder_lr", ""),
        "unet_learning_rate": ("unet_lr", ""),
        "text_encoder_learning_rate": ("text_encoder_lr", ""),
        "max_resolution": ("resolution", ""),
        "precision": ("mixed_precision", ""),
        "grad_accum": ("gradient_accumulation_steps", ""),
        "gradient_accumulation": ("gradient_accumulation_steps", ""),
        "gradient_accumulation_step": ("gradient_accumulation_steps", ""),
        "num_cycles": ("lr_scheduler_num_cycles", ""),
        "save_every_n_step": ("save_every_n_steps", ""),
        "save_every_n_epoch": ("save_every_n_epochs", ""),
        "workers": ("max_data_loader_n_workers", ""),
        "num_workers": ("max_data_loader_n_workers", ""),
        "attention": ("sdpa", "choose one of sdpa, xformers, mem_eff_attn (each a true/false flag)"),
    }
)


def alias_hint(key: str) -> str | None:
    """'epoch is the Kohya GUI's name: sd-scripts calls it max_train_epochs', or None."""
    hit = ALIASES.get(key.strip().lower().replace("-", "_"))
    if hit is None or hit[0] == key:
        return None
    target, note = hit
    return f"{key!r} is the Kohya GUI's name: sd-scripts calls it {target!r} (--set {target}=...)" + (
        f"; {note}" if note else ""
    )
