"""Class-conditional StyleGAN2 (model.conditioning projection, StyleGAN2-ADA's form): NVIDIA's parameter
counts, the label path of G's mapping and D's projection against independent computations, style mixing
within the class, training with every regularizer and ADA (resume bit-exact), and the use side."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import needs_fashion_mnist
from gankit.checkpoint import checkpoint_path, load_generator, load_training_state
from gankit.config import load
from gankit.errors import GankitError
from gankit.models import build_discriminator, build_generator
from gankit.models.layers import minibatch_stddev
from gankit.models.stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator
from gankit.sampling import map_latents
from test_stylegan2 import EVERY_REGULARIZER, TINY_STYLEGAN2, assert_resume_is_bit_identical, count

CONDITIONAL = [*[s for s in TINY_STYLEGAN2 if s != "model.conditioning=none"], "model.conditioning=projection"]


def normalized(x: torch.Tensor) -> torch.Tensor:
    return x / x.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()


def run_layers(mapping: MappingNetwork, x: torch.Tensor) -> torch.Tensor:
    for layer in mapping.layers:
        x = F.leaky_relu(x @ (layer.weight * layer.weight_gain).t() + layer.bias * layer.bias_gain, 0.2) * math.sqrt(2)
    return x


# ---- the networks ---------------------------------------------------------------------------------

# NVIDIA's stylegan2-ada-pytorch Generator and Discriminator with c_dim 10 (z_dim = w_dim = 512, 8 mapping
# layers, D's label mapping at its defaults), counted by building them with that code on this machine.
@pytest.mark.parametrize("resolution, channel_base, channels, official_g, official_d", [
    (32, 16384, 3, 21_791_251, 23_876_096),
    (256, 16384, 3, 25_035_234, 26_370_112),
    (32, 2048, 1, 8_505_931, 11_424_704),
])
def test_parameter_counts_match_nvidias_conditional_networks(resolution, channel_base, channels, official_g,
                                                              official_d):
    G = StyleGAN2Generator(512, 512, resolution, channels, channel_base, 512, 8, num_classes=10)
    D = StyleGAN2Discriminator(resolution, channels, channel_base, 512, num_classes=10)
    assert (count(G), count(D)) == (official_g, official_d)
    # G: the label embedding (10 -> 512) and a first layer of 1024 inputs; D: embedding + 8 layers to cmap.
    assert (count(G.mapping), count(D.mapping)) == (2_369_024, 2_106_880)


def test_mapping_joins_the_normalized_label_embedding_to_the_normalized_z():
    torch.manual_seed(0)
    mapping = MappingNetwork(6, 8, num_ws=3, layers=2, num_classes=4)
    z, labels = torch.randn(5, 6), torch.tensor([0, 3, 1, 1, 2])
    embed = mapping.embed
    embedding = F.one_hot(labels, 4).float() @ (embed.weight * embed.weight_gain).t() + embed.bias
    expected = run_layers(mapping, torch.cat([normalized(z), normalized(embedding)], dim=1))
    ws = mapping(z, labels=labels)
    assert ws.shape == (5, 3, 8)
    torch.testing.assert_close(ws, expected[:, None].expand(5, 3, 8), rtol=1e-5, atol=1e-6)
    # The class changes w; class weights (a one-hot row) are the class itself; no labels: classes in turn.
    assert not torch.allclose(mapping(z, labels=torch.zeros(5, dtype=torch.long)), ws)
    torch.testing.assert_close(mapping(z, labels=F.one_hot(labels, 4).float()), ws)
    torch.testing.assert_close(mapping(z), mapping(z, labels=torch.arange(5) % 4))


def test_discriminator_projects_its_features_on_the_mapped_label():
    """D(x, y) = <out(fc(features)), cmap(y)> / sqrt(cmap_dim), cmap the label's own mapping network (no z)."""
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(16, 1, 64, 16, mbstd_group=2, num_classes=3, mapping_layers=2)
    x, labels = torch.randn(4, 1, 16, 16), torch.tensor([2, 0, 1, 2])
    features = x
    for block in D.blocks:
        features = block(features)
    features = D.conv(minibatch_stddev(features, 2))
    features = D.out(D.fc(features.flatten(1)))
    embed = D.mapping.embed
    cmap = run_layers(D.mapping, normalized(F.one_hot(labels, 3).float() @ (embed.weight * embed.weight_gain).t()
                                            + embed.bias))
    assert D.cmap_dim == 16 and features.shape == cmap.shape == (4, 16)
    torch.testing.assert_close(D(x, labels), (features * cmap).sum(1) / 4.0, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(D(x, labels), D(x, torch.tensor([0, 1, 2, 0])))
    with pytest.raises(ValueError, match="needs labels"):
        D(x)
    with pytest.raises(ValueError, match="unconditional"):
        StyleGAN2Discriminator(16, 1, 64, 16)(x, labels)


def test_style_mixing_takes_the_second_latent_in_the_same_class():
    torch.manual_seed(0)
    G = StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2, style_mixing=1.0, num_classes=3)
    z, labels = torch.randn(4, 8), torch.tensor([1, 2, 0, 1])
    ws = G.mapping(z, labels=labels)
    torch.manual_seed(3)
    mixed = G.mix(ws, z, labels)
    torch.manual_seed(3)
    other = G.mapping(torch.randn(4, 8), labels=labels)
    cutoff = int(torch.randint(1, G.num_ws, ()))
    torch.testing.assert_close(mixed[:, :cutoff], ws[:, :cutoff], rtol=0, atol=0)
    torch.testing.assert_close(mixed[:, cutoff:], other[:, cutoff:], rtol=0, atol=0)


def test_generator_renders_classes_in_turn_without_labels_and_refuses_labels_unconditionally():
    torch.manual_seed(0)
    G = StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2, num_classes=3).eval()
    z = torch.randn(5, 8)
    torch.testing.assert_close(G(z), G(z, torch.tensor([0, 1, 2, 0, 1])))
    assert not torch.allclose(G(z), G(z, torch.zeros(5, dtype=torch.long)))
    with pytest.raises(ValueError, match="unconditional"):
        StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2)(z, torch.zeros(5, dtype=torch.long))


def test_config_accepts_projection_and_refuses_the_other_conditionings():
    config = load("stylegan2-fashion-mnist", ["model.conditioning=projection", "data.class_names=[a,b,c]"])
    G, D = build_generator(config.model, config.data), build_discriminator(config.model, config.data, "none")
    assert G.num_classes == 3 and D.num_classes == 3
    for kind in ("acgan", "concat"):
        with pytest.raises(GankitError, match="use projection"):
            load("stylegan2-fashion-mnist", [f"model.conditioning={kind}"])


def test_map_latents_maps_with_the_given_class_or_the_classes_in_turn():
    torch.manual_seed(0)
    G = StyleGAN2Generator(8, 8, 16, 1, 64, 16, 2, num_classes=3).eval()
    z = torch.randn(7, 8)
    cpu = torch.device("cpu")
    with torch.no_grad():
        torch.testing.assert_close(map_latents(G, z, cpu, label=2), G.mapping(z, labels=torch.full((7,), 2)))
        # In chunks, the classes still run on across them: 0, 1, 2, 0, ... over the whole batch.
        torch.testing.assert_close(map_latents(G, z, cpu, batch_size=2), G.mapping(z, labels=torch.arange(7) % 3))


# ---- training and use -------------------------------------------------------------------------------

@needs_fashion_mnist
def test_conditional_training_resumes_bit_identically_with_ada_and_every_regularizer(tmp_path, run_cli):
    straight, split, a = assert_resume_is_bit_identical(tmp_path, run_cli,
                                                        [*CONDITIONAL, *EVERY_REGULARIZER, "train.grid_size=20"])
    assert "mapping.embed.weight" in a["G"] and "mapping.embed.weight" in a["D"]
    halfway = load_training_state(checkpoint_path(split, 4))
    for net in ("G", "D"):  # the label embeddings learn
        assert not torch.equal(a[net]["mapping.embed.weight"], halfway[net]["mapping.embed.weight"])
    # The export samples a class on its own, and `gankit sample --class` and a W interpolation use it.
    G, meta = load_generator(str(straight), torch.device("cpu"))
    assert G.num_classes == 10 and meta["data"].class_names[0] == "T-shirt/top"
    code, out, err = run_cli("sample", straight, "--class", "Trouser", "--num", "4", "--out", tmp_path / "s.png")
    assert code == 0, err
    code, out, err = run_cli("interpolate", straight, "--mode", "style-mix", "--pairs", "2", "--class", "Bag",
                             "--out", tmp_path / "mix.png")
    assert code == 0, err
    code, _, err = run_cli("interpolate", straight, "--mode", "lerp", "--class", "Bag", "--class", "Coat",
                           "--out", tmp_path / "w.png")
    assert code == 2 and "one --class" in err
