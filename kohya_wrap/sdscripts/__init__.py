"""Everything kohya-wrap knows about kohya-ss sd-scripts lives in this package.

Script and argument names, the dataset folder convention, the TOML formats it reads, the command
lines that start it, the log lines it prints and the files it writes (docs/sd-scripts.md says what
of it kohya-wrap relies on). An sd-scripts upgrade touches this package and nothing else.

The rest of kohya-wrap imports only the names below, from `kohya_wrap.sdscripts` itself, never
from its modules. They are loaded when first used, so `kohya-wrap --help` imports none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

REPOSITORY_URL = "https://github.com/kohya-ss/sd-scripts.git"
PINNED_TAG = "v0.10.1"
PINNED_COMMIT = "ae72efb92babe89ff8e70f057e42db68440e8d61"
TRAIN_SCRIPT = "train_network.py"
# Relative to the kohya-wrap source tree (a git submodule).
SUBMODULE_PATH = "third_party/sd-scripts"
ENV_VAR = "KOHYA_WRAP_SD_SCRIPTS"

# The surface: public name -> (module, name there), by what it is for.
_SURFACE: dict[str, tuple[str, str]] = {
    # the checkout and its packages
    "Checkout": ("checkout", "Checkout"),
    "locate": ("checkout", "locate"),
    "TORCH_MINIMUM": ("requirements", "TORCH_MINIMUM"),
    "TORCH_SUGGESTED": ("requirements", "TORCH_SUGGESTED"),
    "TRAIN_REQUIREMENTS": ("requirements", "TRAIN_REQUIREMENTS"),
    "TRAIN_MODULES": ("requirements", "TRAIN_MODULES"),
    # arguments, presets and values
    "ArgumentError": ("arguments", "ArgumentError"),
    "Problem": ("arguments", "Problem"),
    "argument_table": ("arguments", "table"),
    "Range": ("ranges", "Range"),
    "range_of": ("ranges", "range_of"),
    "alias_hint": ("aliases", "alias_hint"),
    "check_trust": ("arguments", "check_trust"),
    "convert": ("arguments", "convert"),
    "cross_checks": ("arguments", "cross_checks"),
    "did_you_mean": ("arguments", "did_you_mean"),
    "lookup": ("arguments", "lookup"),
    "unknown_key_hint": ("arguments", "unknown_key_hint"),
    "package_problems": ("arguments", "package_problems"),
    "needed_packages": ("arguments", "needed_packages"),
    "argparse_default": ("arguments", "argparse_default"),
    "MANAGED_KEYS": ("arguments", "MANAGED_KEYS"),
    "PRESET_FORBIDDEN": ("arguments", "PRESET_FORBIDDEN"),
    "SECRET_KEYS": ("arguments", "SECRET_KEYS"),
    "STEP_KEYS": ("arguments", "STEP_KEYS"),
    "Argument": ("arguments", "Argument"),
    "Shape": ("values", "Shape"),
    "bucket_key": ("values", "bucket_key"),
    "check_image_sizes": ("values", "check_image_sizes"),
    "filled_in": ("values", "filled_in"),
    "precision_for": ("values", "precision_for"),
    "read_shape": ("values", "read_shape"),
    "run_values": ("values", "run_values"),
    "saves_state": ("values", "saves_state"),
    "StepPlan": ("steps", "StepPlan"),
    "StepSubset": ("steps", "StepSubset"),
    "StepTarget": ("steps", "StepTarget"),
    "plan_steps": ("steps", "plan_steps"),
    # the dataset folder and the configs
    "CAPTION_EXTENSION": ("layout", "CAPTION_EXTENSION"),
    "DEFAULT_REPEATS": ("layout", "DEFAULT_REPEATS"),
    "IMAGE_EXTENSIONS": ("layout", "IMAGE_EXTENSIONS"),
    "REG_DIR": ("layout", "REG_DIR"),
    "TRAIN_DIR": ("layout", "TRAIN_DIR"),
    "SubsetName": ("layout", "SubsetName"),
    "parse_subset_dir_name": ("layout", "parse_subset_dir_name"),
    "subset_dir_name": ("layout", "subset_dir_name"),
    "DatasetSubset": ("configs", "DatasetSubset"),
    "SamplePrompt": ("configs", "SamplePrompt"),
    "TOKENIZER_FILES": ("configs", "TOKENIZER_FILES"),
    "TOKENIZER_REPO": ("configs", "TOKENIZER_REPO"),
    "TOKENIZER_REQUIRED_FILES": ("configs", "TOKENIZER_REQUIRED_FILES"),
    "render_config_toml": ("configs", "render_config_toml"),
    "render_dataset_toml": ("configs", "render_dataset_toml"),
    "render_sample_prompts": ("configs", "render_sample_prompts"),
    "with_batch_size": ("configs", "with_batch_size"),
    "relocated_args": ("command", "relocated_args"),
    "relocate_dataset_toml": ("configs", "relocate_dataset_toml"),
    "sample_prompt_problem": ("configs", "sample_prompt_problem"),
    "tokenizer_subdir": ("configs", "tokenizer_subdir"),
    # launching
    "Launch": ("command", "Launch"),
    "base_model_args": ("command", "base_model_args"),
    "build_argv": ("command", "build_argv"),
    "build_env": ("command", "build_env"),
    "default_cpu_threads": ("command", "default_cpu_threads"),
    "memory_args": ("command", "memory_args"),
    "precision_args": ("command", "precision_args"),
    "render_accelerate_config": ("command", "render_accelerate_config"),
    "tokenizer_args": ("command", "tokenizer_args"),
    # its output
    "NAN_REMEDIES": ("output", "NAN_REMEDIES"),
    "OOM_REMEDIES": ("output", "OOM_REMEDIES"),
    "LineSplitter": ("output", "LineSplitter"),
    "OutputParser": ("output", "OutputParser"),
    "step_from_file_name": ("output", "step_from_file_name"),
    # LoRA files
    "Check": ("lora_file", "Check"),
    "Expectation": ("lora_file", "Expectation"),
    "LoraReport": ("lora_file", "LoraReport"),
    "TEXT_ENCODER_PREFIX": ("lora_file", "TEXT_ENCODER_PREFIX"),
    "UNET_PREFIX": ("lora_file", "UNET_PREFIX"),
    "expectation_from_values": ("lora_file", "expectation_from_values"),
    "read_metadata": ("lora_file", "read_metadata"),
    "verify_lora": ("lora_file", "verify_lora"),
    "is_kohya_key": ("lora_file", "is_kohya_key"),
    "is_sdxl": ("lora_file", "is_sdxl"),
    "is_text_encoder_module": ("lora_file", "is_text_encoder_module"),
    "KOHYA_PREFIXES": ("lora_file", "KOHYA_PREFIXES"),
    "TEXT_ENCODER_PREFIXES": ("lora_file", "TEXT_ENCODER_PREFIXES"),
    "TrainingInfo": ("lora_metadata", "TrainingInfo"),
    "conv_network": ("lora_metadata", "conv_network"),
    "interpret": ("lora_metadata", "interpret"),
    "training_step": ("lora_metadata", "training_step"),
    "TEXT_ENCODER_VOCAB_SIZE": ("sd15", "TEXT_ENCODER_VOCAB_SIZE"),
    "TOKENIZER_MAX_LENGTH": ("sd15", "TOKENIZER_MAX_LENGTH"),
    "read_safetensors_keys": ("sd15", "read_safetensors_keys"),
    "sd15_key_problem": ("sd15", "sd15_problem"),
    "diffusers_problem": ("sd15", "diffusers_problem"),
    "SD15": ("sd15", "SD15"),
    "Sd15Architecture": ("sd15", "Sd15Architecture"),
    "TextEncoderShape": ("sd15", "TextEncoderShape"),
    "UNetShape": ("sd15", "UNetShape"),
    "VaeShape": ("sd15", "VaeShape"),
    "CHECKPOINT_UNET_PREFIX": ("sd15", "UNET_PREFIX"),
    "CHECKPOINT_VAE_PREFIX": ("sd15", "VAE_PREFIX"),
    "CHECKPOINT_TEXT_ENCODER_PREFIX": ("sd15", "TEXT_ENCODER_PREFIX"),
    # resuming
    "SavedState": ("resume", "SavedState"),
    "latest_state": ("resume", "latest_state"),
    "read_state": ("resume", "read_state"),
    "resume_args": ("resume", "resume_args"),
    "resume_limit_warning": ("resume", "resume_limit_warning"),
    "resume_problem": ("resume", "resume_problem"),
    "Extension": ("resume", "Extension"),
    "extension_args": ("resume", "extension_args"),
    "extension_dataset_toml": ("resume", "extension_dataset_toml"),
    "plan_extension": ("resume", "plan_extension"),
    "saved_states": ("resume", "saved_states"),
    "step_checkpoint_name": ("resume", "step_checkpoint_name"),
    # samples
    "SampleName": ("samples", "SampleName"),
    "checkpoint_files": ("samples", "checkpoint_files"),
    "find_samples": ("samples", "find_samples"),
    "parse_sample_name": ("samples", "parse_sample_name"),
    "read_prompt_texts": ("samples", "read_prompt_texts"),
    "sample_dir": ("samples", "sample_dir"),
    "sample_step": ("samples", "sample_step"),
    "checkpoint_steps": ("samples", "checkpoint_steps"),
    # TensorBoard logs
    "validation_losses": ("tensorboard", "validation_losses"),
    "read_scalars": ("tensorboard", "read_scalars"),
    "VALIDATION_STEP_AVERAGE": ("tensorboard", "VALIDATION_STEP_AVERAGE"),
    "GenRequest": ("gen_command", "GenRequest"),
    "SAMPLERS": ("gen_command", "SAMPLERS"),
    "expected_outputs": ("gen_command", "expected_outputs"),
    "render_prompts_file": ("gen_command", "render_prompts_file"),
    "build_gen_argv": ("gen_command", "build_argv"),
    "gen_env": ("gen_command", "build_env"),
}


def __getattr__(name: str) -> Any:
    try:
        module, real = _SURFACE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), real)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_SURFACE])


if TYPE_CHECKING:
    from kohya_wrap.sdscripts.aliases import alias_hint  # noqa: F401
    from kohya_wrap.sdscripts.arguments import (  # noqa: F401
        MANAGED_KEYS,
        PRESET_FORBIDDEN,
        SECRET_KEYS,
        STEP_KEYS,
        Argument,
        ArgumentError,
        Problem,
        argparse_default,
        check_trust,
        convert,
        cross_checks,
        did_you_mean,
        lookup,
        needed_packages,
        package_problems,
        unknown_key_hint,
    )
    from kohya_wrap.sdscripts.arguments import table as argument_table  # noqa: F401
    from kohya_wrap.sdscripts.checkout import (  # noqa: F401
        Checkout,
        locate,
    )
    from kohya_wrap.sdscripts.command import (  # noqa: F401
        Launch,
        base_model_args,
        build_argv,
        build_env,
        default_cpu_threads,
        memory_args,
        precision_args,
        relocated_args,
        render_accelerate_config,
        tokenizer_args,
    )
    from kohya_wrap.sdscripts.configs import (  # noqa: F401
        TOKENIZER_FILES,
        TOKENIZER_REPO,
        TOKENIZER_REQUIRED_FILES,
        DatasetSubset,
        SamplePrompt,
        relocate_dataset_toml,
        render_config_toml,
        render_dataset_toml,
        render_sample_prompts,
        sample_prompt_problem,
        tokenizer_subdir,
        with_batch_size,
    )
    from kohya_wrap.sdscripts.gen_command import (  # noqa: F401
        SAMPLERS,
        GenRequest,
        expected_outputs,
        render_prompts_file,
    )
    from kohya_wrap.sdscripts.gen_command import build_argv as build_gen_argv  # noqa: F401
    from kohya_wrap.sdscripts.gen_command import build_env as gen_env  # noqa: F401
    from kohya_wrap.sdscripts.layout import (  # noqa: F401
        CAPTION_EXTENSION,
        DEFAULT_REPEATS,
        IMAGE_EXTENSIONS,
        REG_DIR,
        TRAIN_DIR,
        SubsetName,
        parse_subset_dir_name,
        subset_dir_name,
    )
    from kohya_wrap.sdscripts.lora_file import (  # noqa: F401
        KOHYA_PREFIXES,
        TEXT_ENCODER_PREFIX,
        TEXT_ENCODER_PREFIXES,
        UNET_PREFIX,
        Check,
        Expectation,
        LoraReport,
        expectation_from_values,
        is_kohya_key,
        is_sdxl,
        is_text_encoder_module,
        read_metadata,
        verify_lora,
    )
    from kohya_wrap.sdscripts.lora_metadata import (  # noqa: F401
        TrainingInfo,
        conv_network,
        interpret,
        training_step,
    )
    from kohya_wrap.sdscripts.output import (  # noqa: F401
        NAN_REMEDIES,
        OOM_REMEDIES,
        LineSplitter,
        OutputParser,
        step_from_file_name,
    )
    from kohya_wrap.sdscripts.ranges import Range, range_of  # noqa: F401
    from kohya_wrap.sdscripts.requirements import (  # noqa: F401
        TORCH_MINIMUM,
        TORCH_SUGGESTED,
        TRAIN_MODULES,
        TRAIN_REQUIREMENTS,
    )
    from kohya_wrap.sdscripts.resume import (  # noqa: F401
        Extension,
        SavedState,
        extension_args,
        extension_dataset_toml,
        latest_state,
        plan_extension,
        read_state,
        resume_args,
        resume_limit_warning,
        resume_problem,
        saved_states,
        step_checkpoint_name,
    )
    from kohya_wrap.sdscripts.samples import (  # noqa: F401
        SampleName,
        checkpoint_files,
        checkpoint_steps,
        find_samples,
        parse_sample_name,
        read_prompt_texts,
        sample_dir,
        sample_step,
    )
    from kohya_wrap.sdscripts.sd15 import (  # noqa: F401  # noqa: F401
        SD15,
        TEXT_ENCODER_VOCAB_SIZE,
        TOKENIZER_MAX_LENGTH,
        Sd15Architecture,
        TextEncoderShape,
        UNetShape,
        VaeShape,
        diffusers_problem,
        read_safetensors_keys,
    )
    from kohya_wrap.sdscripts.sd15 import TEXT_ENCODER_PREFIX as CHECKPOINT_TEXT_ENCODER_PREFIX  # noqa: F401
    from kohya_wrap.sdscripts.sd15 import UNET_PREFIX as CHECKPOINT_UNET_PREFIX  # noqa: F401
    from kohya_wrap.sdscripts.sd15 import VAE_PREFIX as CHECKPOINT_VAE_PREFIX  # noqa: F401
    from kohya_wrap.sdscripts.sd15 import sd15_problem as sd15_key_problem  # noqa: F401
    from kohya_wrap.sdscripts.steps import (  # noqa: F401
        StepPlan,
        StepSubset,
        StepTarget,
        plan_steps,
    )
    from kohya_wrap.sdscripts.tensorboard import VALIDATION_STEP_AVERAGE, read_scalars, validation_losses  # noqa: F401
    from kohya_wrap.sdscripts.values import (  # noqa: F401
        Shape,
        bucket_key,
        check_image_sizes,
        filled_in,
        precision_for,
        read_shape,
        run_values,
        saves_state,
    )
