"""The valid range of every numeric train_network.py argument, from how sd-scripts v0.10.1 uses it.

argparse checks only the type, and a --config_file value not even that, so a 0 batch size reaches a
division (ZeroDivisionError) and a negative one plans negative steps. `arguments.convert` checks each
value against RANGES; a numeric argument missing here has no range to check (any finite number).
sample_every_n_steps/epochs are left out on purpose: sd-scripts resets values <= 0 to None
(library/train_util.py: verify_training_args) and `arguments.cross_checks` warns about it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Range:
    """lo/hi bounds (None: unbounded), each inclusive unless lo_open/hi_open; `why` says where sd-scripts needs it."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def allows(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            left = "above" if self.lo_open else "from"
            right = "below" if self.hi_open else "to"
            return f"{left} {self.lo:g} {right} {self.hi:g}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "a finite number"


def _at_least(n: float, why: str) -> Range:
    return Range(lo=n, why=why)


def _positive(why: str) -> Range:
    return Range(lo=0, lo_open=True, why=why)


def _fraction(why: str, *, hi_open: bool = False) -> Range:
    return Range(lo=0, hi=1, hi_open=hi_open, why=why)


_COUNT = "a count of steps, epochs or items"
_DIVIDES = "sd-scripts divides by it or takes a modulo by it"
_SEED = Range(lo=0, hi=2**32 - 1, why="numpy's seed (accelerate.utils.set_seed) takes 0 to 2**32-1")

RANGES: Mapping[str, Range] = MappingProxyType(
    {
        # dataset and buckets (library/train_util.py: BaseDataset, BucketManager)
        "keep_tokens": _at_least(0, "a number of leading caption tokens"),
        "vae_batch_size": _at_least(1, "the batch size of latent caching"),
        "min_bucket_reso": _at_least(1, "a bucket side in pixels"),
        "max_bucket_reso": _at_least(1, "a bucket side in pixels"),
        "bucket_reso_steps": _at_least(1, "bucket sides are multiples of it"),
        "token_warmup_min": _at_least(0, "a number of caption tokens"),
        "token_warmup_step": _at_least(0, "a step count (or a fraction of max_train_steps)"),
        "caption_dropout_rate": _fraction("a probability"),
        "caption_dropout_every_n_epochs": _at_least(0, "an epoch interval; 0 is off"),
        "caption_tag_dropout_rate": _fraction("a probability"),
        "dataset_repeats": _at_least(1, "a repeat count"),
        # saving (train_network.py: the save loop takes `step % save_every_n_steps`)
        "save_every_n_epochs": _at_least(1, _DIVIDES),
        "save_every_n_steps": _at_least(1, _DIVIDES),
        "save_n_epoch_ratio": _at_least(1, "a number of saved files"),
        "save_last_n_epochs": _at_least(1, "a number of kept files"),
        "save_last_n_epochs_state": _at_least(1, "a number of kept states"),
        "save_last_n_steps": _at_least(1, "a number of steps"),
        "save_last_n_steps_state": _at_least(1, "a number of steps"),
        # training length and batches (train_network.py: steps per epoch = ceil(len(loader) / accumulation))
        "train_batch_size": _at_least(1, "the images of one batch, at least one; " + _DIVIDES),
        "max_train_steps": _at_least(1, _COUNT),
        "max_train_epochs": _at_least(1, _COUNT),
        "max_data_loader_n_workers": Range(
            lo=0, hi=256, why="a number of DataLoader worker processes (train_network.py takes at most the CPU count)"
        ),
        "seed": _SEED,
        "validation_seed": _SEED,
        "gradient_accumulation_steps": _at_least(1, _DIVIDES),
        "ddp_timeout": _at_least(1, "minutes"),
        # text encoder: hidden_states[-clip_skip] of the 12-layer SD1.5 CLIP (train_util.get_hidden_states)
        "clip_skip": Range(lo=1, hi=12, why="a layer counted from the last of the 12 SD1.5 text encoder layers"),
        # noise and timesteps (train_util.get_noise_noisy_latents_and_timesteps, get_huber_threshold_if_needed)
        "noise_offset": _at_least(0, "the scale of an added noise"),
        "multires_noise_iterations": _at_least(1, "a number of noise octaves"),
        "ip_noise_gamma": _at_least(0, "the scale of an input perturbation"),
        "multires_noise_discount": _fraction("each octave is scaled by discount**i"),
        "min_timestep": Range(lo=0, hi=999, why="a DDPM timestep (0 to 999)"),
        "max_timestep": Range(lo=1, hi=1000, why="the exclusive upper timestep (1 to 1000)"),
        "huber_c": _positive("log(huber_c) is taken"),
        "huber_scale": _positive("a scale of the Huber threshold"),
        "prior_loss_weight": _at_least(0, "a loss weight"),
        # 0 is off: train_network.py applies them only when true (`if args.min_snr_gamma:`), as the GUI's 0 means
        "min_snr_gamma": _at_least(0, "the min-SNR clamp; 0 turns it off"),
        "v_pred_like_loss": _at_least(0, "a loss weight"),
        # optimizer and scheduler (train_util.get_optimizer, get_scheduler_fix)
        "learning_rate": _positive("the optimizer's step size"),
        "unet_lr": _at_least(0, "a learning rate; 0 leaves the U-Net unchanged"),
        "text_encoder_lr": _at_least(0, "a learning rate; 0 leaves the text encoder unchanged"),
        "max_grad_norm": _at_least(0, "a gradient norm; 0 turns clipping off"),
        "lr_warmup_steps": _at_least(0, "a step count, or a fraction (< 1) of max_train_steps"),
        "lr_decay_steps": _at_least(0, "a step count, or a fraction (< 1) of max_train_steps"),
        "lr_scheduler_num_cycles": _at_least(1, "a number of cosine cycles"),
        "lr_scheduler_power": _positive("the exponent of the polynomial schedule"),
        "lr_scheduler_timescale": _at_least(1, "the inverse-sqrt schedule divides by it"),
        "lr_scheduler_min_lr_ratio": _fraction("a ratio of the initial learning rate"),
        # network (networks/lora.py: create_network; alpha/dim scales the update)
        "network_dim": Range(
            lo=1, hi=1280, why="the LoRA rank; no SD1.5 layer is wider than 1280, so a larger rank adds nothing"
        ),
        # networks/lora.py (LoRAModule): `alpha = self.lora_dim if alpha is None or alpha == 0`
        "network_alpha": _at_least(0, "the LoRA scale is alpha / dim; 0 means alpha = dim"),
        "network_dropout": _fraction("a probability; 1 drops every neuron", hi_open=True),
        "scale_weight_norms": _at_least(0, "the max norm of each LoRA weight pair; 0 turns it off"),
        "initial_epoch": _at_least(1, "1 is the first epoch"),
        "initial_step": _at_least(0, "0 is the first step"),
        # validation (train_network.py: the validation loop)
        "validation_split": _fraction("a share of the training images", hi_open=True),
        "validate_every_n_steps": _at_least(1, _DIVIDES),
        "validate_every_n_epochs": _at_least(1, _DIVIDES),
        "max_validation_steps": _at_least(1, _COUNT),
    }
)


# Numeric arguments with no range to check, and why.
UNRANGED: Mapping[str, str] = MappingProxyType(
    {
        "sample_every_n_steps": "sd-scripts resets values <= 0 to None; cross_checks warns",
        "sample_every_n_epochs": "sd-scripts resets values <= 0 to None; cross_checks warns",
        "adaptive_noise_scale": "may be negative: noise_offset + scale * mean is clamped at 0 "
        "(train_util.apply_noise_offset)",
        "base_weights_multiplier": "a merge multiplier; any finite number",
        "max_token_length": "argparse choices: None, 150 or 225",
        "zero_stage": "argparse choices: 0 to 3",
    }
)


def range_of(key: str) -> Range | None:
    return RANGES.get(key)
