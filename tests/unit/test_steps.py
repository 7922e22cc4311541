import re
from pathlib import Path

import pytest

from kohya_wrap.sdscripts.steps import StepSubset, StepTarget, balanced_reg_repeats, count_steps, plan_steps

TRANSCRIPTS = Path(__file__).parents[1] / "data" / "transcripts"  # recorded sd-scripts v0.10.1 runs


def test_step_formula_worked_example_without_reg_images():
    # The worked example of docs/sd-scripts.md#step-formula: 20 images at 10_sks dog, batch 2, no bucketing
    # -> T=200, L=100, 10 epochs = 1000 steps.
    count = count_steps([StepSubset(20, 10)], batch_size=2)
    assert count.train_images_x_repeats == 200
    assert count.batches_per_epoch == 100
    assert 10 * count.steps_per_epoch == 1000
    assert count.epochs_for(1000) == 10


def test_step_formula_worked_example_with_50_reg_images_doubles_the_steps():
    count = count_steps([StepSubset(20, 10), StepSubset(50, 1, is_reg=True)], batch_size=2)
    assert count.raw_reg_images_x_repeats == 50  # printed as "num reg images"
    assert count.reg_images_x_repeats == 200  # every reg image raised to 4 repeats
    assert count.batches_per_epoch == 200
    assert 10 * count.steps_per_epoch == 2000
    assert count.epochs_for(1000) == 5  # "With --max_train_steps 1000 instead, it is 5 epochs."


def test_reg_balancing_follows_sd_scripts_loop():
    # More reg samples than train samples: the first pass stops early, later images are never used.
    assert balanced_reg_repeats(5, [(4, 2)]) == [[2, 2, 2, 0]]
    # Fewer: passes of +1 per image, stopping mid-pass when the total is reached.
    assert balanced_reg_repeats(7, [(2, 1), (1, 1)]) == [[3, 2], [2]]
    assert balanced_reg_repeats(0, [(3, 1)]) == [[0, 0, 0]]


def test_partial_batches_are_rounded_up_per_bucket():
    count = count_steps([StepSubset(3, 1, bucket="a"), StepSubset(3, 1, bucket="b")], batch_size=2)
    assert count.batches_per_epoch == 4  # ceil(3/2) + ceil(3/2), not ceil(6/2)
    one_bucket = count_steps([StepSubset(3, 1), StepSubset(3, 1)], batch_size=2)
    assert one_bucket.batches_per_epoch == 3


def test_processes_and_gradient_accumulation_divide_the_epoch():
    count = count_steps([StepSubset(25, 4)], batch_size=2, grad_accum=3, num_processes=2)
    assert count.batches_per_epoch == 50
    assert count.steps_per_epoch == 9  # ceil(ceil(50 / 2) / 3)


def test_skipped_subsets_count_nothing():
    count = count_steps([StepSubset(10, 0), StepSubset(0, 5), StepSubset(4, 2)], batch_size=1)
    assert count.train_images_x_repeats == 8


def _summary(path: Path) -> dict[str, int]:
    text = path.read_text(encoding="utf-8")
    keys = {
        "train": r"num train images \* repeats .*?: (\d+)",
        "reg": r"num reg images .*?: (\d+)",
        "batches": r"num batches per epoch .*?: (\d+)",
        "epochs": r"num epochs .*?: (\d+)",
        "steps": r"total optimization steps .*?: (\d+)",
    }
    return {k: int(re.search(p, text).group(1)) for k, p in keys.items()}


@pytest.mark.parametrize("run", ["A_cli", "B_config"])
def test_our_count_matches_what_sd_scripts_printed(run):
    # The recorded runs: 4 images in 10_ohwx man, batch 1, max_train_steps 4.
    printed = _summary(TRANSCRIPTS / f"{run}.pipe.stdout.txt")
    plan = plan_steps([StepSubset(4, 10)], StepTarget(4, 2, 4), batch_size=1, choose_repeats=False)
    assert printed == {
        "train": plan.count.train_images_x_repeats,
        "reg": plan.count.raw_reg_images_x_repeats,
        "batches": plan.count.batches_per_epoch,
        "epochs": plan.epochs,
        "steps": plan.max_train_steps,
    }


def test_search_lands_on_the_target_in_whole_epochs():
    plan = plan_steps([StepSubset(20, 1)], StepTarget(3000, 2000, 5000), batch_size=2)
    assert plan.max_train_steps == 3000 and plan.whole_epochs and plan.in_range
    assert plan.max_train_steps == plan.epochs * plan.count.steps_per_epoch
    assert plan.arithmetic == (
        f"20 images x {plan.repeats[0]} repeats / batch 2 = {plan.count.steps_per_epoch} "
        f"steps per epoch; x {plan.epochs} epochs = 3000 steps"
    )
    assert plan.epochs == 10  # the preferred epoch count breaks the tie


def test_search_keeps_explicit_repeats_and_chooses_epochs():
    plan = plan_steps([StepSubset(20, 10)], StepTarget(3000, 2000, 5000), batch_size=2, choose_repeats=False)
    assert plan.repeats == (10,)
    assert plan.arithmetic == "20 images x 10 repeats / batch 2 = 100 steps per epoch; x 30 epochs = 3000 steps"


def test_search_with_an_awkward_count_stays_in_range_nearest_the_target():
    plan = plan_steps([StepSubset(17, 1)], StepTarget(3000, 2000, 5000), batch_size=2)
    assert 2000 <= plan.max_train_steps <= 5000
    assert abs(plan.max_train_steps - 3000) <= 5


def test_regularization_images_are_part_of_the_search():
    plan = plan_steps([StepSubset(20, 1), StepSubset(50, 1, is_reg=True)], StepTarget(3000, 2000, 5000), batch_size=2)
    assert plan.max_train_steps == 3000
    assert plan.count.reg_images_x_repeats >= plan.count.train_images_x_repeats
    assert "regularization" in plan.arithmetic


def test_an_epoch_longer_than_the_range_stops_partway_with_a_warning():
    plan = plan_steps([StepSubset(20000, 1)], StepTarget(3000, 2000, 5000), batch_size=2)
    assert plan.max_train_steps == 3000 and not plan.whole_epochs and plan.epochs == 1
    assert "partway" not in plan.arithmetic and "stops at 3000 steps" in plan.arithmetic
    assert plan.warnings and "10000 steps" in plan.warnings[0]


def test_pinned_steps_and_epochs():
    pinned = plan_steps(
        [StepSubset(20, 10)], StepTarget(3000, 2000, 5000), batch_size=2, choose_repeats=False, fixed_steps=250
    )
    assert pinned.max_train_steps == 250 and pinned.epochs == 3 and not pinned.whole_epochs
    epochs = plan_steps([StepSubset(20, 1)], StepTarget(3000, 2000, 5000), batch_size=2, fixed_epochs=5)
    assert epochs.epochs == 5 and epochs.max_train_steps == 5 * epochs.count.steps_per_epoch
    assert abs(epochs.max_train_steps - 3000) <= epochs.count.steps_per_epoch


@pytest.mark.parametrize(
    "subsets, repeats",
    [
        ([StepSubset(100, 1)], (60,)),  # 100 x 60 / 2 = 3000: one whole epoch
        ([StepSubset(37, 1)], (163,)),  # 37 x 163 / 2 = 3016 batches: the epoch stops at 3000
        ([StepSubset(20, 1), StepSubset(50, 1, is_reg=True)], (150, 1)),  # regularization balanced to 3000
    ],
)
def test_single_epoch_holds_every_step_and_ends_at_the_target(subsets, repeats):
    target = StepTarget(3000, 2000, 5000, max_repeats=1000, single_epoch=True)
    plan = plan_steps(subsets, target, batch_size=2)
    assert (plan.epochs, plan.max_train_steps, plan.repeats) == (1, 3000, repeats)
    assert plan.count.steps_per_epoch >= 3000 and plan.warnings == ()
    assert plan.whole_epochs == (plan.count.steps_per_epoch == 3000)


def test_single_epoch_gives_way_to_what_the_user_pinned_or_to_max_repeats():
    one = StepTarget(3000, 2000, 5000, single_epoch=True)
    explicit = plan_steps([StepSubset(20, 10)], one, batch_size=2, choose_repeats=False)
    assert explicit.repeats == (10,) and explicit.epochs == 30
    capped = plan_steps(
        [StepSubset(20, 1)], StepTarget(3000, 2000, 5000, max_repeats=100, single_epoch=True), batch_size=2
    )
    assert capped.epochs > 1 and capped.max_train_steps == 3000  # 100 repeats cannot hold 3000 steps in one epoch


def test_pinned_steps_of_a_single_epoch_preset_stay_in_one_epoch():
    """`--set max_train_steps=N` with a likeness preset: one epoch holds the N steps, so the run resumes correctly."""
    target = StepTarget(3000, 2000, 5000, max_repeats=1000, single_epoch=True)
    plan = plan_steps([StepSubset(6, 1)], target, batch_size=2, fixed_steps=300)
    assert (plan.epochs, plan.max_train_steps, plan.repeats, plan.count.steps_per_epoch) == (1, 300, (100,), 300)
    assert not plan.in_range  # 300 is below the preset's range; pinned, it is kept without a warning
    assert not plan.warnings
    several = plan_steps([StepSubset(6, 1)], target, batch_size=2, fixed_epochs=5)
    assert several.epochs == 5  # max_train_epochs still chooses epochs
