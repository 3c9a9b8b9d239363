"""Spectral normalization (Miyato et al. 2018) on a network's weights, and the plain form it computes with."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


def apply_spectral_norm(network: nn.Module) -> nn.Module:
    """Spectral-norm parametrization on every conv, transposed-conv and linear weight (not on norm layers)."""
    for module in list(network.modules()):
        if isinstance(module, nn.ConvTranspose2d):
            # A transposed convolution's weight is (in, out, k, k): its output dimension is 1.
            spectral_norm(module, dim=1)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            spectral_norm(module, dim=0)
    return network


def is_spectrally_normalized(network: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m) for m in network.modules())


@torch.no_grad()
def plain_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `network` as a plain network: each normalized weight as computed in eval mode."""
    # In eval mode the parametrization computes W / (u^T W v) from the stored u, v without a power
    # iteration, so reading the weights changes nothing in `network`; u and v themselves are left out.
    tensors = network.state_dict(keep_vars=True)
    if not is_spectrally_normalized(network):
        return tensors
    tensors = {name: t for name, t in tensors.items() if ".parametrizations." not in f".{name}"}
    for module_name, module in network.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, parametrization in module.parametrizations.items():
            was_training = parametrization.training
            parametrization.eval()
            try:
                tensors[f"{module_name}.{tensor_name}" if module_name else tensor_name] = getattr(module, tensor_name)
            finally:
                parametrization.train(was_training)
    return tensors

