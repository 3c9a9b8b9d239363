"""GDPP (Elfeki et al. 2019): a generator term that matches the diversity of fake and real batches.

Each batch's diversity kernel is L = phi phi^T over the L2-normalized features phi of the
discriminator's penultimate layer ([N, N]). With eigenpairs (lambda_i, v_i) of the fake and real
kernels, sorted by eigenvalue, the term is

    1e-4 * mean_i (lambda_fake_i - lambda_real_i)^2  +  sum_i lambda_hat_real_i * (1 - |<v_fake_i, v_real_i>|)

where lambda_hat_real are the real eigenvalues min-max normalized to [0, 1]. The magnitude part and its
1e-4 factor are the authors' code. Their structure part is -sum_i lambda_hat_i * <v_fake_i, v_real_i>;
ours adds the constant sum_i lambda_hat_i (no effect on gradients) so the term is 0 for identical
batches and positive otherwise, and takes |.| because an eigenvector's sign is arbitrary: v and -v
are the same direction.

The eigendecomposition is torch.linalg.eigh in float64 with a guarded backward: the eigenvector
gradient has 1/(lambda_i - lambda_j) factors, infinite for a collapsed fake batch (many equal
eigenvalues, the very case GDPP targets), and those pairs are left out instead of blowing up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import LossConfig

MAGNITUDE_WEIGHT = 1e-4  # the authors' factor bringing the two parts to comparable ranges
DEGENERATE_GAP = 1e-6  # eigenvalue gaps below this (relative to the largest) get no eigenvector gradient


class _GuardedEigh(torch.autograd.Function):
    """torch.linalg.eigh of a symmetric matrix, whose backward ignores rotations within (nearly)
    degenerate eigenspaces, where eigenvectors are arbitrary and the exact gradient is infinite."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor):
        values, vectors = torch.linalg.eigh(matrix)
        ctx.save_for_backward(values, vectors)
        return values, vectors

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor | None, grad_vectors: torch.Tensor | None):
        values, vectors = ctx.saved_tensors
        inner = torch.zeros_like(vectors)
        if grad_vectors is not None:
            gaps = values.unsqueeze(-2) - values.unsqueeze(-1)  # gaps[i, j] = lambda_j - lambda_i
            tolerance = DEGENERATE_GAP * values.abs().max().clamp_min(1e-30)
            inv_gaps = torch.where(gaps.abs() > tolerance, 1.0 / torch.where(gaps == 0, 1.0, gaps), 0.0)
            inner = inv_gaps * (vectors.mT @ grad_vectors)
        if grad_values is not None:
            inner = inner + torch.diag_embed(grad_values)
        grad = vectors @ inner @ vectors.mT
        return 0.5 * (grad + grad.mT)  # the input is symmetric: its gradient is too


def diversity_eigen(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the batch's DPP kernel, in float64."""
    phi = F.normalize(features.flatten(1).double(), p=2, dim=1)
    return _GuardedEigh.apply(phi @ phi.T)


def gdpp_loss(fake_features: torch.Tensor, real_features: torch.Tensor) -> torch.Tensor:
    """The GDPP term of G's loss from D's penultimate features [N, F] of a fake and a real batch of the
    same size; real features are a target (detached). Returned in the fake features' dtype."""
    if fake_features.shape[0] != real_features.shape[0] or fake_features.shape[0] < 2:
        raise ValueError(f"GDPP needs fake and real batches of the same size >= 2, got "
                         f"{fake_features.shape[0]} and {real_features.shape[0]}")
    fake_values, fake_vectors = diversity_eigen(fake_features)
    with torch.no_grad():
        real_values, real_vectors = diversity_eigen(real_features.detach())
        spread = real_values.max() - real_values.min()
        # Min-max normalized weights; equal real eigenvalues make every direction equally important.
        weights = (real_values - real_values.min()) / spread if spread > 1e-12 else torch.ones_like(real_values)
    magnitude = MAGNITUDE_WEIGHT * (fake_values - real_values).pow(2).mean()
    alignment = (fake_vectors * real_vectors).sum(dim=0).abs()  # |cos| of unit eigenvectors
    structure = (weights * (1.0 - alignment)).sum()
    return (magnitude + structure).to(fake_features.dtype)


def generator_loss_with_gdpp(cfg: LossConfig, discriminator: nn.Module, real: torch.Tensor,
                             fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's adversarial loss plus cfg.gdpp * GDPP, with one discriminator pass over the fakes. The
    discriminator must accept `with_features=True` (the PGAN one does); real is at its resolution."""
    from gankit.losses import g_loss_term

    fake_out, fake_features = discriminator(fake, with_features=True)
    loss = g_loss_term(cfg.kind, fake_out.float())
    stats = {"g_adv": loss.detach()}
    if cfg.gdpp > 0:
        with torch.no_grad():
            _, real_features = discriminator(real, with_features=True)
        diversity = gdpp_loss(fake_features.float(), real_features.float())
        loss = loss + cfg.gdpp * diversity
        stats["gdpp"] = diversity.detach()
    stats["g_loss"] = loss.detach()
    return loss, stats
