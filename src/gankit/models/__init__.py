"""Generator and discriminator builders, chosen by `model.arch`."""

from __future__ import annotations

from torch import nn

from gankit.config import DataConfig, ModelConfig
from gankit.models.spectral_norm import apply_spectral_norm


def output_shape(data: DataConfig) -> tuple[int, ...]:
    """Shape of one generated sample: (2,) for toy points, (C, H, W) for images."""
    return (2,) if data.is_toy else (data.channels, data.resolution, data.resolution)


def discriminator_norm(config) -> str:
    """A Config's model.d_norm resolved: `auto` means batch norm, except for WGAN-GP, whose per-sample
    penalty rules batch statistics out."""
    if config.model.d_norm != "auto":
        return config.model.d_norm
    return "layer" if config.loss.kind == "wgan-gp" else "batch"


def num_classes(model: ModelConfig, data: DataConfig) -> int:
    """The classes a conditional model is built for (data.class_names, resolved when training starts); 0: none."""
    if model.conditioning == "none":
        return 0
    if not data.class_names:
        raise ValueError("a conditional model needs data.class_names (resolved from the data when training starts)")
    return len(data.class_names)


def build_generator(model: ModelConfig, data: DataConfig, parametrized: bool = True) -> nn.Module:
    """parametrized=False: without spectral norm whatever the config says (the EMA generator's and exports' form)."""
    generator = _build_generator(model, data)
    if model.g_spectral_norm and parametrized:
        apply_spectral_norm(generator)
    return generator


def _build_generator(model: ModelConfig, data: DataConfig) -> nn.Module:
    if model.arch == "stylegan2":
        from gankit.models.stylegan2 import StyleGAN2Generator

        return StyleGAN2Generator(model.z_dim, model.w_dim, data.resolution, data.channels, model.channel_base,
                                  model.channel_max, model.mapping_layers, model.mapping_lr, model.style_mixing,
                                  num_classes(model, data))
    if model.arch == "pgan":
        from gankit.models.pgan import PGANGenerator

        # A plain G(z) call renders the stage stored in the weights at data.resolution.
        return PGANGenerator(model.z_dim, data.resolution, data.channels, model.depths)
    if model.arch == "mlp":
        from gankit.models.mlp import MLPGenerator

        return MLPGenerator(model.z_dim, output_shape(data), model.g_channels, model.hidden_layers,
                            image_output=not data.is_toy, num_classes=num_classes(model, data),
                            label_embed_dim=model.label_embed_dim)
    from gankit.models.dcgan import DCGANGenerator

    return DCGANGenerator(model.z_dim, data.resolution, data.channels, model.g_channels, model.g_upsample,
                          num_classes(model, data), model.conditioning, model.label_embed_dim)


def build_discriminator(model: ModelConfig, data: DataConfig, norm: str) -> nn.Module:
    """`norm` is the resolved discriminator normalization: batch, layer or none (pgan has none)."""
    discriminator = _build_discriminator(model, data, norm)
    return apply_spectral_norm(discriminator) if model.d_spectral_norm else discriminator


def _build_discriminator(model: ModelConfig, data: DataConfig, norm: str) -> nn.Module:
    if model.arch == "stylegan2":
        from gankit.models.stylegan2 import StyleGAN2Discriminator

        return StyleGAN2Discriminator(data.resolution, data.channels, model.channel_base, model.channel_max,
                                      model.mbstd_group, num_classes(model, data))
    if model.arch == "pgan":
        from gankit.models.pgan import PGANDiscriminator

        return PGANDiscriminator(data.resolution, data.channels, model.depths)
    if model.arch == "mlp":
        from gankit.models.mlp import MLPDiscriminator

        return MLPDiscriminator(output_shape(data), model.d_channels, model.hidden_layers,
                                num_classes(model, data), model.conditioning, model.label_embed_dim)
    from gankit.models.dcgan import DCGANDiscriminator

    return DCGANDiscriminator(data.resolution, data.channels, model.d_channels, norm, num_classes(model, data),
                              model.conditioning, model.label_embed_dim)
