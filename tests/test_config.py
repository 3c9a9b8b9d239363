from pathlib import Path

import pytest

from gankit import config as cfg
from gankit.errors import GankitError


def test_defaults_match_design_contract():
    c = cfg.Config()
    assert (c.data.source, c.data.resolution, c.data.channels) == ("fashion-mnist", 32, 1)
    assert (c.model.arch, c.model.z_dim, c.loss.kind, c.train.betas) == ("dcgan", 100, "nsgan", (0.5, 0.999))
    assert c.train.n_critic == 1 and c.train.ema == 0.999 and c.train.precision == "fp32"


def test_misspelled_key_is_refused_with_allowed_keys():
    with pytest.raises(GankitError) as err:
        cfg.load("dcgan-fashion-mnist", ["loss.gp_wieght=5"])
    message = str(err.value)
    assert "loss.gp_wieght" in message and "unknown key" in message and "gp_weight" in message


def test_wrong_type_and_range_are_refused():
    with pytest.raises(GankitError, match="train.steps"):
        cfg.load("dcgan-fashion-mnist", ["train.steps=many"])
    with pytest.raises(GankitError, match="train.batch_size"):
        cfg.load("dcgan-fashion-mnist", ["train.batch_size=0"])
    with pytest.raises(GankitError, match="loss.kind.*must be one of"):
        cfg.load("dcgan-fashion-mnist", ["loss.kind=wgangp"])


def test_resolution_must_be_power_of_two_for_dcgan():
    with pytest.raises(GankitError, match="power of two"):
        cfg.load("dcgan-fashion-mnist", ["data.resolution=48"])


def test_set_values_parse_as_yaml_scalars():
    c = cfg.load("dcgan-fashion-mnist", ["train.steps=123", "train.g_lr=1e-4", "train.ema=null",
                                         "train.betas=[0.0, 0.9]", "loss.kind=hinge"])
    assert c.train.steps == 123 and c.train.g_lr == pytest.approx(1e-4) and c.train.ema is None
    assert c.train.betas == (0.0, 0.9) and c.loss.kind == "hinge"


def test_yaml_file_with_exponent_floats(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {g_lr: 2e-4, d_lr: 1E-3}\n")
    c = cfg.load(str(path))
    assert c.train.g_lr == pytest.approx(2e-4) and c.train.d_lr == pytest.approx(1e-3)


def test_bad_set_syntax_and_unknown_preset():
    with pytest.raises(GankitError, match="KEY=VALUE"):
        cfg.load("dcgan-fashion-mnist", ["train.steps"])
    with pytest.raises(GankitError, match="neither a YAML file nor a preset"):
        cfg.load("no-such-preset")


@pytest.mark.parametrize("name", cfg.preset_names())
def test_every_preset_validates_and_round_trips(name):
    c = cfg.load(name)
    again = cfg.validate(cfg.yaml_load(cfg.to_yaml(c)))
    assert again == c
    assert cfg.preset_description(name)


def test_required_presets_exist():
    required = {"dcgan-fashion-mnist", "gan-mlp-fashion-mnist", "lsgan-fashion-mnist", "wgan-fashion-mnist",
                "wgangp-fashion-mnist", "wgangp-25gaussians", "gan-8gaussians", "dcgan-celeba-64",
                "dcgan-lsun-bedroom-64", "wgangp-anime-64", "sngan-fashion-mnist", "wgangp-anime-64-ada",
                "dcgan-celeba-64-ada", "sngan-proj-fashion-mnist", "acgan-fashion-mnist", "cgan-25gaussians"}
    assert required <= set(cfg.preset_names())


def test_modern_presets_hold_their_recipes():
    sngan = cfg.load("sngan-fashion-mnist")
    assert (sngan.model.d_spectral_norm, sngan.model.d_norm, sngan.loss.kind) == (True, "none", "hinge")
    assert (sngan.train.d_lr, sngan.train.betas, sngan.train.n_critic) == (1e-4, (0.5, 0.999), 1)
    for name, kind in (("wgangp-anime-64-ada", "wgan-gp"), ("dcgan-celeba-64-ada", "nsgan")):
        preset = cfg.load(name)
        assert (preset.augment.policy, preset.augment.target, preset.loss.kind) == ("ada", 0.6, kind)


def test_conditional_presets_hold_their_recipes():
    proj = cfg.load("sngan-proj-fashion-mnist")
    assert (proj.model.conditioning, proj.model.d_spectral_norm, proj.model.d_norm, proj.loss.kind) == \
        ("projection", True, "none", "hinge")
    acgan = cfg.load("acgan-fashion-mnist")
    assert (acgan.model.conditioning, acgan.loss.class_loss_on_fakes) == ("acgan", False)
    toy = cfg.load("cgan-25gaussians")
    assert (toy.model.conditioning, toy.model.arch, toy.data.source) == ("concat", "mlp", "toy-25gaussians")


def test_toy_source_needs_mlp():
    with pytest.raises(GankitError, match="model.arch to mlp"):
        cfg.load("dcgan-fashion-mnist", ["data.source=toy-8gaussians"])


def test_changed_frozen_keys():
    a = cfg.load("dcgan-fashion-mnist")
    b = cfg.load("dcgan-fashion-mnist", ["model.g_channels=48", "train.steps=9"])
    assert cfg.changed_frozen_keys(a, b) == ["model.g_channels"]
    # Augmentation changes what D learns from: frozen like the loss.
    augmented = cfg.load("dcgan-fashion-mnist", ["augment.policy=diffaugment", "augment.ops=[translation]"])
    assert cfg.changed_frozen_keys(a, augmented) == ["augment.policy", "augment.ops"]


@pytest.mark.parametrize("setting, key", [("loss.r1_gamma=-1", "loss.r1_gamma"), ("loss.r2_gamma=-0.5", "loss.r2_gamma"),
                                          ("loss.reg_every=0", "loss.reg_every"), ("loss.lecam=-0.1", "loss.lecam")])
def test_negative_penalty_weights_and_reg_every_below_one_are_refused(setting, key, tmp_path, run_cli):
    with pytest.raises(GankitError, match=key.replace(".", r"\.")):
        cfg.load("dcgan-fashion-mnist", [setting])
    code, _, err = run_cli("train", "dcgan-fashion-mnist", "--out", tmp_path / "run", "--set", setting)
    assert code == 2 and key in err and "Traceback" not in err and not (tmp_path / "run").exists()


def test_r1_with_compile_is_refused():
    with pytest.raises(GankitError, match="train.compile.*loss.r1_gamma"):
        cfg.load("dcgan-fashion-mnist", ["loss.r1_gamma=1.0", "train.compile=true"])


@pytest.mark.parametrize("key", ["model.d_spectral_norm", "model.g_spectral_norm"])
def test_spectral_norm_on_pgan_is_refused_before_training(key, tmp_path, run_cli):
    assert cfg.load("dcgan-fashion-mnist", [f"{key}=true"]).model.model_dump()[key.split(".")[1]] is True
    with pytest.raises(GankitError, match=f"{key} is not supported by model.arch pgan"):
        cfg.load("pgan-fashion-mnist", [f"{key}=true"])
    code, _, err = run_cli("train", "pgan-fashion-mnist", "--out", tmp_path / "run", "--set", f"{key}=true")
    assert code == 2 and key in err and "Traceback" not in err and not (tmp_path / "run").exists()
