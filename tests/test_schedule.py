"""The Progressive GAN schedule: stage, alpha, batch size and learning rate per generator step."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gankit import config as cfg
from gankit.errors import GankitError
from gankit.training.schedule import Schedule, run_length


def _schedule(counts=(10, 20, 30), fade=5, batches=(16, 16, 8), g_lrs=(1e-3, 1e-3, 5e-4), d_lrs=(2e-3, 2e-3, 1e-3)):
    return Schedule(tuple(counts), fade, tuple(batches), tuple(g_lrs), tuple(d_lrs))


def test_boundaries_of_each_scale():
    s = _schedule()
    assert s.stage_starts == (0, 10, 30) and s.scheduled_steps == 60
    first = s.at(0)
    assert (first.stage, first.alpha, first.step_in_stage, first.batch_size) == (0, 1.0, 0, 16)
    assert (s.at(9).stage, s.at(9).alpha) == (0, 1.0)  # last step of 4x4
    # First step of a new scale: alpha 0, exactly the previous network.
    grow = s.at(10)
    assert (grow.stage, grow.alpha, grow.step_in_stage, grow.resolution, grow.fading) == (1, 0.0, 0, 8, True)
    assert s.at(12).alpha == pytest.approx(0.4)
    assert s.at(14).alpha == pytest.approx(0.8)  # last fade-in step
    assert (s.at(15).alpha, s.at(15).fading) == (1.0, False)  # end of fade-in
    assert (s.at(29).stage, s.at(29).step_in_stage, s.at(29).alpha) == (1, 19, 1.0)
    third = s.at(30)
    assert (third.stage, third.alpha, third.batch_size, third.g_lr, third.d_lr) == (2, 0.0, 8, 5e-4, 1e-3)
    assert (s.at(59).stage, s.at(59).alpha) == (2, 1.0)  # last scheduled step
    assert (s.at(500).stage, s.at(500).step_in_stage, s.at(500).alpha) == (2, 470, 1.0)  # stays at the end


def test_no_fade_in_means_alpha_one_from_the_first_step():
    s = _schedule(fade=0)
    assert s.at(10).alpha == 1.0 and s.at(30).alpha == 1.0


def test_images_seen_follow_the_batch_size_of_each_scale():
    s = _schedule()
    assert s.images_before(0) == 0
    assert s.images_before(10) == 10 * 16
    assert s.images_before(12, n_critic=2) == (10 * 16 + 2 * 16) * 2
    assert s.images_before(70) == 10 * 16 + 20 * 16 + 40 * 8  # the last scale continues


def test_invalid_schedules_are_refused():
    with pytest.raises(ValueError, match="fade_iters"):
        _schedule(counts=(10, 4, 30))
    with pytest.raises(ValueError, match="same length"):
        _schedule(batches=(16, 16))
    with pytest.raises(ValueError, match="negative"):
        _schedule().at(-1)


def test_schedule_from_config_and_command_line_overrides(tmp_path):
    path = tmp_path / "pgan.yaml"
    path.write_text("data: {resolution: 16}\nmodel: {arch: pgan}\n"
                    "train: {max_iter_at_scale: [4, 6, 8], fade_iters: 2, g_lr: 1.0e-3, d_lr: 2.0e-3}\n")
    base = Schedule.from_config(cfg.load(str(path)).train)
    assert base.batch_sizes == (64, 64, 64) and base.g_lrs == (1e-3,) * 3 and base.d_lrs == (2e-3,) * 3
    changed = Schedule.from_config(cfg.load(str(path), [
        "train.max_iter_at_scale=[5, 5, 5]", "train.fade_iters=4", "train.batch_size_at_scale=[32, 16, 8]",
        "train.lr_at_scale=[1e-3, 1e-3, 5e-4]"]).train)
    assert changed.max_iter_at_scale == (5, 5, 5) and changed.fade_iters == 4
    assert changed.at(10).batch_size == 8 and changed.at(10).g_lr == changed.at(10).d_lr == 5e-4
    assert changed.at(7).alpha == pytest.approx(0.5)


def test_pgan_config_without_a_schedule_is_refused_before_training():
    # An export's model and data sections alone validate (sampling needs no schedule)...
    config = cfg.validate({"data": {"resolution": 16}, "model": {"arch": "pgan"}})
    # ...but training cannot start without one.
    with pytest.raises(GankitError, match="needs train.max_iter_at_scale"):
        Schedule.from_config(config.train)


def test_run_length_is_train_steps_when_given_else_the_schedule_sum():
    s = _schedule()  # 10 + 20 + 30 steps
    assert run_length(None, s) == (60, None) and run_length(60, s) == (60, None)
    longer, note = run_length(75, s)
    assert longer == 75 and note.startswith("train.steps 75 differs from the sum of train.max_iter_at_scale (60): "
                                             "train.steps wins and the steps after 60 stay at the last scale (16x16)")
    shorter, note = run_length(25, s)  # step index 24 is at 8x8
    assert shorter == 25 and "train.steps wins and the run stops early, at the 8x8 scale" in note


def test_train_steps_defaults_to_5000_except_for_pgan():
    assert cfg.validate({}).train.steps == 5000
    assert cfg.validate({"model": {"arch": "mlp"}, "data": {"source": "toy-8gaussians"},
                         "train": {"steps": None}}).train.steps == 5000
    for preset in ("pgan-fashion-mnist", "pgan-celeba-128"):
        config = cfg.load(preset)
        assert config.train.steps is None and "steps: null" in cfg.to_yaml(config)  # resolved when training starts
    # Overriding the schedule alone sets the run's length.
    config = cfg.load("pgan-fashion-mnist", ["train.max_iter_at_scale=[1,2,3,4]", "train.fade_iters=1"])
    assert run_length(config.train.steps, Schedule.from_config(config.train)) == (10, None)


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=5), fade_fraction=st.floats(0, 1),
       step=st.integers(0, 200))
def test_schedule_invariants(counts, fade_fraction, step):
    fade = int(fade_fraction * min(counts[1:], default=0))
    n = len(counts)
    s = Schedule(tuple(counts), fade, (4,) * n, (1e-3,) * n, (1e-3,) * n)
    p = s.at(step)
    assert s.stage_starts[p.stage] + p.step_in_stage == step
    assert p.stage == n - 1 or p.step_in_stage < counts[p.stage]
    assert 0.0 <= p.alpha <= 1.0
    assert (p.alpha == 0.0) == (p.stage > 0 and fade > 0 and p.step_in_stage == 0)
    later = s.at(step + 1)
    assert (later.stage, later.alpha) >= (p.stage, p.alpha) or later.stage > p.stage
