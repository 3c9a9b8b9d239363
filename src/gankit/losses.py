"""The objectives and their regularizers, as small functions of discriminator outputs (raw scores).

Every loss is a mean over the batch; LeCam, the one regularizer with state, is a small object whose
state goes into the checkpoint. `discriminator_loss` and `generator_loss` own the forward
passes, so the training loop does not know which objective it runs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import LossConfig
from gankit.models.conditioning import adversarial_scores, class_logits


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


def decision_boundary(kind: str, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor | float:
    """The score between "real" and "fake" for ADA's r_t = E[sign(D(real) - boundary)]: 0 for the logistic
    and hinge losses (the paper's sign(D(real))), 0.5 between LSGAN's targets 0 and 1. A Wasserstein critic's
    scores have no fixed origin (its loss ignores a shift of all of them; a drift term pins D(real) near 0
    whatever D has learnt), so its boundary is the midpoint of this batch's mean real and fake scores."""
    if kind == "lsgan":
        return 0.5
    if kind in ("wgan", "wgan-gp"):
        return (real_out.mean() + fake_out.mean()) / 2
    return 0.0


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


def input_gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor,
                           loss_scale: torch.Tensor | None = None) -> torch.Tensor:
    """R1/R2's unweighted term: the batch mean of ||grad_x D(x)||^2, from scores of inputs that require grad.

    Differentiable (create_graph=True), so one ordinary backward of the total loss trains D on it, also
    under DDP. `loss_scale` (fp16): the same AMP recipe as gradient_penalty."""
    total = scores.float().sum() if loss_scale is None else scores.float().sum() * loss_scale
    (grad,) = torch.autograd.grad(total, inputs, create_graph=True)
    if loss_scale is not None:
        grad = grad.float() / loss_scale
    return grad.float().flatten(1).square().sum(1).mean()


def lazy_weight(reg_every: int, d_update: int) -> int:
    """Lazy regularization (StyleGAN2): a penalty counts on every reg_every-th discriminator update
    (d_update 0, reg_every, 2 * reg_every, ...), multiplied by reg_every to keep its average weight; else 0."""
    return reg_every if d_update % reg_every == 0 else 0


class LeCam:
    """LeCam regularization (Tseng et al. 2021) and its state: EMAs of D's mean scores on real and fake.

    The term is mean (D(real) - ema_fake)^2 + mean (D(fake) - ema_real)^2. The EMAs are updated first,
    each discriminator update, as the authors' code does; the first update sets them to the means (their
    code also starts the averages from the current values). `average` maps this process's means to the
    means over every rank (under DDP), so that all ranks hold the same state."""

    def __init__(self, decay: float = 0.99, average: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.decay = decay
        self.average = average or (lambda means: means)
        self.ema: torch.Tensor | None = None  # [ema of mean D(real), ema of mean D(fake)], float32

    def __call__(self, real_out: torch.Tensor, fake_out: torch.Tensor) -> torch.Tensor:
        """Updates the EMAs with this batch's scores, then returns the (unweighted) term."""
        means = self.average(torch.stack([real_out.detach().float().mean(), fake_out.detach().float().mean()]))
        if self.ema is None:
            self.ema = means.clone()
        else:
            self.ema = self.ema.to(means) * self.decay + means * (1 - self.decay)
        ema_real, ema_fake = self.ema[0], self.ema[1]
        return ((real_out.float() - ema_fake) ** 2).mean() + ((fake_out.float() - ema_real) ** 2).mean()

    def state_dict(self) -> dict:
        return {"ema": None if self.ema is None else self.ema.detach().cpu().clone()}

    def load_state_dict(self, state: dict | None) -> None:
        """None (a checkpoint from before LeCam existed, or without it): start afresh."""
        self.ema = None if not state or state.get("ema") is None else state["ema"].float().clone()


class PathLength:
    """StyleGAN2's path-length regularizer (Karras et al. 2020) and its state, the running mean `a` of
    path lengths (in the checkpoint).

    For images x = G(ws) and y ~ N(0, I) / sqrt(H W), a sample's path length is |J_w^T y|, computed as
    grad_ws <x, y> by autograd (create_graph, so one ordinary backward trains on it, also under DDP) and,
    as NVIDIA's code does, sqrt of the mean over the num_ws styles of the squared norm over w_dim. Then
    a <- a + decay * (mean length - a) and the penalty is mean (length - a)^2, a held constant (NVIDIA's
    code lets decay times the gradient of the batch mean through a). `average` maps this process's mean
    length to the mean over every rank (under DDP), so that every rank holds the same a."""

    def __init__(self, decay: float = 0.01, average: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.decay = decay
        self.average = average or (lambda value: value)
        self.mean = torch.zeros([])  # a, float32

    def lengths(self, images: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor,
                loss_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Each sample's |J_w^T y| for the given y (`noise`, shaped like images)."""
        total = (images.float() * noise).sum()
        if loss_scale is not None:  # fp16: the AMP recipe of gradient_penalty
            total = total * loss_scale
        (grad,) = torch.autograd.grad(total, ws, create_graph=True)
        if loss_scale is not None:
            grad = grad.float() / loss_scale
        return grad.float().square().sum(2).mean(1).sqrt()

    def __call__(self, images: torch.Tensor, ws: torch.Tensor, loss_scale: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Updates a with this batch's lengths and returns the (unweighted) penalty. noise: N(0, I) shaped
        like images (None: drawn here; data-parallel training passes its rank's share of a global draw)."""
        if noise is None:
            noise = torch.randn(images.shape, device=images.device)
        noise = noise / math.sqrt(images.shape[2] * images.shape[3])
        lengths = self.lengths(images, ws, noise, loss_scale)
        batch_mean = self.average(lengths.detach().mean())
        self.mean = self.mean.to(batch_mean) + self.decay * (batch_mean - self.mean.to(batch_mean))
        return (lengths - self.mean).square().mean()

    def state_dict(self) -> dict:
        return {"mean": self.mean.detach().cpu().clone()}

    def load_state_dict(self, state: dict | None) -> None:
        """None (a checkpoint without the regularizer): start from a = 0, as a fresh run does."""
        self.mean = torch.zeros([]) if not state else state["mean"].float().clone()


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
                       d_update: int = 0, lecam: LeCam | None = None,
                       augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       real_labels: torch.Tensor | None = None, fake_labels: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total discriminator loss and its parts (detached, penalties unweighted) for logging; fake must be
    detached. gp_eps: the gradient penalty's interpolation weights (None: drawn by gradient_penalty);
    loss_scale: fp16's current loss scale, for the penalties (see gradient_penalty); d_update: the count
    of discriminator updates before this one, for lazy R1/R2; lecam: its state, when loss.lecam > 0;
    augment: applied to the real and the fake batch before D sees them (gankit.augment; None: none); one
    with an `observe_real_scores` method (ADA) is also handed D's scores on the reals. real_labels,
    fake_labels: the classes of the two batches, for a class-conditional D (None: unconditional); an AC-GAN
    D's class logits add class_weight times their cross-entropy on the reals, and with class_loss_on_fakes
    on the fakes too (Odena et al. 2017)."""
    if cfg.lecam > 0 and lecam is None:  # a caller's bug: the term would be silently missing
        raise ValueError("loss.lecam > 0 needs its state: pass lecam=LeCam()")
    lazy = lazy_weight(cfg.reg_every, d_update)
    use_r1, use_r2 = cfg.r1_gamma > 0 and lazy > 0, cfg.r2_gamma > 0 and lazy > 0
    # R1/R2 differentiate the scores of this same forward pass with respect to its inputs: it saves a
    # forward, and under DDP it calls a batch-norm D no more often before the one backward than the loss
    # alone does (more calls can raise an in-place error on CUDA, docs/distributed.md).
    if use_r1:
        real = real.detach().requires_grad_(True)
    if use_r2:
        fake = fake.detach().requires_grad_(True)
    # D sees augmented images; R1/R2 differentiate with respect to the images before augmentation,
    # through it, as StyleGAN2-ADA's loss does.
    augment = augment or (lambda images: images)
    if cfg.kind == "wgan-gp" and cfg.gp_weight > 0 and gp_eps is None:
        # Drawn before the augmentation's draws, in the order data-parallel training draws them.
        gp_eps = penalty_epsilon(real.shape[0], real)
    seen_real, seen_fake = augment(real), augment(fake)
    real_full, fake_full = conditional_call(discriminator, seen_real, real_labels), \
        conditional_call(discriminator, seen_fake, fake_labels)
    real_scores, fake_scores = adversarial_scores(real_full), adversarial_scores(fake_full)
    real_out, fake_out = real_scores.float(), fake_scores.float()
    observe = getattr(augment, "observe_real_scores", None)
    if observe is not None:  # ADA measures D's overfitting by the signs of its scores on augmented reals
        observe(real_out.detach() - decision_boundary(cfg.kind, real_out.detach(), fake_out.detach()))
    loss = d_loss_terms(cfg.kind, real_out, fake_out, cfg.label_smoothing, cfg.sigmoid_output)
    stats = {"d_loss": loss.detach(), "d_real": real_out.detach().mean(), "d_fake": fake_out.detach().mean()}
    if class_logits(real_full) is not None:
        term = classification_loss(real_full, real_labels)
        if cfg.class_loss_on_fakes:
            term = term + classification_loss(fake_full, fake_labels)
        loss = loss + cfg.class_weight * term
        stats["d_class"] = term.detach()
    if cfg.kind == "wgan-gp" and cfg.gp_weight > 0:
        # Interpolates between the images D saw, augmented ones included; a conditional critic scores them
        # with the real batch's labels (an interpolate's class is ambiguous; the reals' is one of its ends').
        def critic(images: torch.Tensor) -> torch.Tensor:
            return adversarial_scores(conditional_call(discriminator, images, real_labels))

        penalty = gradient_penalty(critic, seen_real.detach(), seen_fake.detach(), gp_eps, loss_scale)
        loss = loss + cfg.gp_weight * penalty
        stats["gp"] = penalty.detach()
    for name, used, gamma, scores, inputs in (("r1", use_r1, cfg.r1_gamma, real_scores, real),
                                              ("r2", use_r2, cfg.r2_gamma, fake_scores, fake)):
        if used:
            penalty = input_gradient_penalty(scores, inputs, loss_scale)
            loss = loss + (gamma / 2 * lazy) * penalty
            stats[name] = penalty.detach()
    if cfg.drift > 0:
        drift = drift_penalty(real_out)
        loss = loss + cfg.drift * drift
        stats["drift"] = drift.detach()
    if cfg.lecam > 0:
        term = lecam(real_out, fake_out)
        loss = loss + cfg.lecam * term
        stats["lecam"] = term.detach()
    return loss, stats


def generator_loss(cfg: LossConfig, discriminator: nn.Module, fake: torch.Tensor,
                   augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   fake_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's loss and its value for logging; augment (fresh draws) is applied to the fakes, differentiably.
    fake_labels: the classes G was asked for (conditional D); AC-GAN adds class_weight times the class
    cross-entropy of the fakes."""
    seen_fake = augment(fake) if augment is not None else fake
    out = conditional_call(discriminator, seen_fake, fake_labels)
    loss = g_loss_term(cfg.kind, adversarial_scores(out).float(), cfg.sigmoid_output)
    stats = {"g_loss": loss.detach()}
    if class_logits(out) is not None:
        term = classification_loss(out, fake_labels)
        loss = loss + cfg.class_weight * term
        stats["g_class"] = term.detach()
    return loss, stats


def conditional_call(discriminator: Callable, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """D(images), or D(images, labels) for a class-conditional D."""
    return discriminator(images) if labels is None else discriminator(images, labels)


def classification_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AC-GAN: the cross-entropy of D's class logits (in D's output) against the classes, batch mean."""
    return F.cross_entropy(class_logits(out).float(), labels)
