"""Spectral normalization (model.d_spectral_norm, model.g_spectral_norm): normalized weights after training,
the EMA generator averaging the normalized weights, and exports and sampling of the plain form."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import needs_fashion_mnist, tiny_train_args
from gankit.checkpoint import list_checkpoints, load_checkpoint_generator, load_generator, load_training_state
from gankit.cli import main as gankit_main
from gankit.config import DataConfig, ModelConfig, validate
from gankit.models import build_discriminator, build_generator
from gankit.models.spectral_norm import is_spectrally_normalized, plain_state_dict
from gankit.training.ema import make_ema, update_ema

BOTH = ["model.d_spectral_norm=true", "model.g_spectral_norm=true"]
WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def largest_singular_values(network: nn.Module) -> list[float]:
    """sigma_max of each conv / linear weight as the network computes with it (eval mode), reshaped to
    (out, in*k*k); a transposed convolution's weight (in, out, k, k) is transposed first."""
    network.eval()
    values = []
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, WEIGHTED):
                weight = module.weight
                if isinstance(module, nn.ConvTranspose2d):
                    weight = weight.transpose(0, 1)
                values.append(torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2).item())
    return values


def trained_networks(run: Path) -> tuple[nn.Module, nn.Module, dict]:
    state = load_training_state(list_checkpoints(run)[-1])
    config = validate(state["config"])
    G = build_generator(config.model, config.data)
    D = build_discriminator(config.model, config.data, "batch")
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    return G, D, state


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Six steps of the tiny DCGAN with and without spectral norm on both networks (fp32)."""
    folder = tmp_path_factory.mktemp("sn")
    made = {}
    for name, extra in (("sn", BOTH), ("plain", [])):
        made[name] = folder / name
        assert gankit_main(tiny_train_args(made[name], steps=6, extra=[*extra, "train.precision=fp32"])) == 0
    return made


@needs_fashion_mnist
def test_every_weight_has_largest_singular_value_one_after_training(runs):
    G, D, _ = trained_networks(runs["sn"])
    for network in (G, D):
        sigmas = largest_singular_values(network)
        assert len(sigmas) == sum(isinstance(m, WEIGHTED) for m in network.modules()) == 3  # 16 px: 4, 8, 16
        assert all(abs(s - 1.0) < 0.05 for s in sigmas), sigmas
        # Batch norm keeps its plain scale and shift.
        assert not any(isinstance(m, nn.BatchNorm2d) and is_spectrally_normalized(m) for m in network.modules())
    G, D, _ = trained_networks(runs["plain"])
    assert all(abs(s - 1.0) > 0.3 for s in largest_singular_values(G) + largest_singular_values(D))


@needs_fashion_mnist
def test_mlp_weights_are_normalized_too(tmp_path):
    run = tmp_path / "mlp"
    assert gankit_main(tiny_train_args(run, steps=4, extra=[*BOTH, "model.arch=mlp", "model.hidden_layers=2"])) == 0
    G, D, _ = trained_networks(run)
    sigmas = largest_singular_values(G) + largest_singular_values(D)
    assert len(sigmas) == 6 and all(abs(s - 1.0) < 0.05 for s in sigmas), sigmas


@needs_fashion_mnist
def test_the_ema_generator_and_the_export_are_the_plain_network(runs, tmp_path):
    _, _, state = trained_networks(runs["sn"])
    config = validate(state["config"])
    plain_names = set(build_generator(config.model, config.data, parametrized=False).state_dict())
    assert set(state["G_ema"]) == plain_names and not any("_u" in k for k in state["G_ema"])
    # The export holds the EMA weights; sampling from it, from the run and from the checkpoint agree.
    exported, _ = load_generator(runs["sn"])
    from_checkpoint, _ = load_checkpoint_generator(list_checkpoints(runs["sn"])[-1])
    assert not is_spectrally_normalized(exported)
    z = torch.randn(4, 16)
    assert torch.equal(exported(z), from_checkpoint(z))
    # --no-ema samples the raw G with its parametrization, which computes with the normalized weights.
    raw, _ = load_checkpoint_generator(list_checkpoints(runs["sn"])[-1], ema=False)
    assert is_spectrally_normalized(raw)
    assert gankit_main(["sample", str(runs["sn"]), "--num", "4", "--no-ema", "--out", str(tmp_path / "raw.png")]) == 0


@needs_fashion_mnist
def test_without_an_ema_generator_the_export_folds_the_normalization_of_g(tmp_path):
    run = tmp_path / "no_ema"
    assert gankit_main(tiny_train_args(run, steps=4, extra=[*BOTH, "train.ema=null", "train.precision=fp32"])) == 0
    exported, _ = load_generator(run)
    raw, _ = load_checkpoint_generator(list_checkpoints(run)[-1])  # no G_ema: the raw G, parametrized
    assert is_spectrally_normalized(raw) and not is_spectrally_normalized(exported)
    z = torch.randn(4, 16)
    torch.testing.assert_close(exported(z), raw(z), atol=1e-6, rtol=0)
    # Continued with an EMA generator, the run starts it from G's normalized weights.
    assert gankit_main(["train", str(run), "--set", "train.steps=5", "--set", "train.ema=0.999"]) == 0
    assert "G_ema" in load_training_state(list_checkpoints(run)[-1])


def test_ema_averages_the_normalized_weights_not_the_raw_ones():
    model = ModelConfig(arch="mlp", z_dim=4, g_channels=8, hidden_layers=1, g_spectral_norm=True)
    data = DataConfig(source="toy-8gaussians")
    torch.manual_seed(0)
    G = build_generator(model, data)
    rng_before = torch.get_rng_state()
    ema = make_ema(G, lambda: build_generator(model, data, parametrized=False))
    assert torch.equal(torch.get_rng_state(), rng_before)  # building the copy draws nothing
    assert not is_spectrally_normalized(ema) and set(ema.state_dict()) == set(plain_state_dict(G))
    before = ema.net[0].weight.clone()
    with torch.no_grad():
        G.net[0].parametrizations.weight.original.mul_(3.0).add_(0.1)
    G.train()
    G(torch.randn(2, 4))  # one power iteration on the new weights, as a training step makes
    G.eval()
    normalized = G.net[0].weight.detach().clone()
    G.train()
    update_ema(ema, G, 0.75)
    torch.testing.assert_close(ema.net[0].weight, 0.75 * before + 0.25 * normalized)
    # Not the raw weights' average: those are three times larger.
    assert (ema.net[0].weight - 0.75 * before).abs().max() < 0.5 * (
        0.25 * G.net[0].parametrizations.weight.original).abs().max()
    # Reading the normalized weights ran no power iteration: u is what the forward left.
    u = G.net[0].parametrizations.weight[0]._u.clone()
    update_ema(ema, G, 0.75)
    assert torch.equal(G.net[0].parametrizations.weight[0]._u, u)
