"""The objectives and their regularizers, as small functions of discriminator outputs (raw scores).

Every loss is a mean over the batch. `discriminator_loss` and `generator_loss` own the forward
passes, so the training loop does not know which objective it runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import LossConfig


def bce(out: torch.Tensor, target: float, sigmoid_output: bool = False) -> torch.Tensor:
    """Binary cross-entropy of raw scores against a constant target, averaged over the batch.

    From logits it is written with softplus (stable for any score). With sigmoid_output the scores go
    through a sigmoid first and the log-probabilities are clamped at -100, as torch.nn.BCELoss does:
    the tutorials' pairing, numerically the same for moderate scores."""
    if sigmoid_output:
        p = torch.sigmoid(out)
        log_p, log_not_p = p.log().clamp(min=-100), (1 - p).log().clamp(min=-100)
        return -(target * log_p + (1 - target) * log_not_p).mean()
    return (target * F.softplus(-out) + (1 - target) * F.softplus(out)).mean()


def d_loss_terms(kind: str, real_out: torch.Tensor, fake_out: torch.Tensor, label_smoothing: float = 0.0,
                 sigmoid_output: bool = False) -> torch.Tensor:
    """The discriminator's objective (to minimize) from its scores on real and generated samples."""
    if kind in ("gan", "nsgan"):
        # -log D(real) - log(1 - D(fake)); one-sided label smoothing lowers only the real target.
        return bce(real_out, 1.0 - label_smoothing, sigmoid_output) + bce(fake_out, 0.0, sigmoid_output)
    if kind == "lsgan":
        # Targets b = 1 for real and a = 0 for fake (Mao et al. 2017).
        return 0.5 * ((real_out - 1) ** 2).mean() + 0.5 * (fake_out**2).mean()
    if kind in ("wgan", "wgan-gp"):
        return fake_out.mean() - real_out.mean()
    if kind == "hinge":
        return F.relu(1 - real_out).mean() + F.relu(1 + fake_out).mean()
    raise ValueError(f"unknown loss kind {kind!r}")


def g_loss_term(kind: str, fake_out: torch.Tensor, sigmoid_output: bool = False) -> torch.Tensor:
    """The generator's objective (to minimize) from the discriminator's scores on its samples."""
    if kind == "gan":
        # The original minimax objective: minimize log(1 - D(G(z))).
        return -bce(fake_out, 0.0, sigmoid_output)
    if kind == "nsgan":
        # The non-saturating variant: minimize -log D(G(z)).
        return bce(fake_out, 1.0, sigmoid_output)
    if kind == "lsgan":
        return 0.5 * ((fake_out - 1) ** 2).mean()
    if kind in ("wgan", "wgan-gp", "hinge"):
        return -fake_out.mean()
    raise ValueError(f"unknown loss kind {kind!r}")


def penalty_epsilon(count: int, like: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's interpolation weights e ~ U[0, 1), one per sample, shaped to broadcast over `like`."""
    return torch.rand(count, *([1] * (like.dim() - 1)), device=like.device, dtype=like.dtype)


def gradient_penalty(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None, loss_scale: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: mean of (||grad_x D(x_hat)||_2 - 1)^2 at x_hat = e*real + (1-e)*fake, e ~ U[0, 1) per sample.

    The gradient comes from autograd.grad on the inputs with create_graph=True, so one ordinary
    backward of the total loss differentiates through it (this also works under DDP). `eps` is drawn
    here unless given: data-parallel training passes its rank's slice of a draw for the global batch.
    `loss_scale` (fp16): the scores are scaled before autograd.grad so that small gradients do not
    underflow in fp16, and the gradient unscaled before the norm (PyTorch's AMP recipe)."""
    if eps is None:
        eps = penalty_epsilon(real.shape[0], real)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = discriminator(x_hat)
    total = scores.sum() if loss_scale is None else scores.float().sum() * loss_scale
    (grad,) = torch.autograd.grad(total, x_hat, create_graph=True)
    if loss_scale is not None:
        grad = grad.float() / loss_scale
    norms = grad.float().flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).mean()


def drift_penalty(real_out: torch.Tensor) -> torch.Tensor:
    """Progressive GAN's drift term: mean D(real)^2, keeping critic scores near zero."""
    return (real_out.float() ** 2).mean()


@torch.no_grad()
def clip_weights(discriminator: nn.Module, clip: float) -> None:
    """WGAN: keep every critic parameter in [-clip, clip] after each critic update."""
    for p in discriminator.parameters():
        p.clamp_(-clip, clip)


def discriminator_loss(cfg: LossConfig, discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                       gp_eps: torch.Tensor | None = None, loss_scale: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total discriminator loss and its parts (detached) for logging; fake must be detached.
    gp_eps: the gradient penalty's interpolation weights (None: drawn by gradient_penalty);
    loss_scale: fp16's current loss scale, for the penalty (see gradient_penalty)."""
    real_out = discriminator(real).float()
    fake_out = discriminator(fake).float()
    loss = d_loss_terms(cfg.kind, real_out, fake_out, cfg.label_smoothing, cfg.sigmoid_output)
    stats = {"d_loss": loss.detach(), "d_real": real_out.detach().mean(), "d_fake": fake_out.detach().mean()}
    if cfg.kind == "wgan-gp" and cfg.gp_weight > 0:
        penalty = gradient_penalty(discriminator, real, fake, gp_eps, loss_scale)
        loss = loss + cfg.gp_weight * penalty
        stats["gp"] = penalty.detach()
    if cfg.drift > 0:
        drift = drift_penalty(real_out)
        loss = loss + cfg.drift * drift
        stats["drift"] = drift.detach()
    return loss, stats


def generator_loss(cfg: LossConfig, discriminator: nn.Module,
                   fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = g_loss_term(cfg.kind, discriminator(fake).float(), cfg.sigmoid_output)
    return loss, {"g_loss": loss.detach()}
