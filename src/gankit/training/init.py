"""Fine-tuning: `gankit train CONFIG --init SOURCE` starts a fresh run's networks from another model's weights.

SOURCE is a zoo entry (`zoo:NAME`), an exported generator, a run folder (its newest checkpoint) or a
checkpoint file. G and the EMA generator start from the source's generator: an export's (EMA) weights for
both, or a checkpoint's G and G_ema; D starts from a checkpoint's D, and fresh (the config's seed) from an
export. Optimizers, step counts and random states are never taken: the run starts at step 0.

The config must describe the same generator (and, from a checkpoint, the same discriminator): the tensors
it builds are compared by name and shape with the source's before anything is loaded, and a mismatch
names the differing tensors and the config keys to set.

Spectral norm on G (model.g_spectral_norm): G computes W / sigma(W), whose spectral norm is 1 whatever W
is, so weights trained without it (any other norm) cannot be reproduced, and such a source is refused.
From a checkpoint trained with it, G's stored parametrization (W, u, v) is loaded as it is. From an export
of such a run, the folded weights W' (norm 1 up to the power iteration's estimate) go into W, with u and v
set to W''s top singular vectors: G then computes W' / ||W'||, equal to W' within that estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gankit.errors import GankitError
from gankit.models import discriminator_norm

INIT_LOG_PREFIX = "init: "  # log.txt's line recording the source, e.g. "init: zoo:dcgan-fashion-mnist (...)"
MAX_LISTED = 5  # tensors named in a mismatch message


@dataclass
class InitWeights:
    """What a source gives a fresh run; read on one process (rank 0) and sent to the others."""

    source: str
    model: object  # the source's ModelConfig
    data: object  # the source's DataConfig
    ema: dict[str, torch.Tensor]  # the plain generator an export holds (a checkpoint's G_ema, else its G's plain form)
    g_plain: dict[str, torch.Tensor]  # the raw G in plain form (an export: its weights again)
    g_parametrized: dict[str, torch.Tensor] | None  # a checkpoint's G as stored, when trained with g_spectral_norm
    d: dict[str, torch.Tensor] | None  # a checkpoint's D; None for an export
    d_config: object | None  # the checkpoint's whole Config (its D's model and loss), None for an export
    origin: str  # what the weights are, for log.txt


def read_init_source(source: str) -> InitWeights:
    """Reads SOURCE's weights with every check `gankit sample` makes (zoo checksums, tensor headers)."""
    from gankit.checkpoint import (is_checkpoint_file, list_checkpoints, load_checkpoint_generator,
                                   load_generator, load_training_state, run_folder_of)
    from gankit.config import validate
    from gankit.models.spectral_norm import plain_state_dict
    from gankit.zoo import is_zoo_name

    checkpoint = None
    if is_checkpoint_file(source) and not is_zoo_name(source):
        checkpoint = Path(source)
    elif not is_zoo_name(source) and run_folder_of(source) is not None:
        found = list_checkpoints(Path(source))
        if not found:
            raise GankitError(f"--init {source}: the run folder has no checkpoints yet")
        checkpoint = found[-1]
    if checkpoint is None:  # a zoo entry or an export: the EMA generator alone
        generator, meta = load_generator(source)
        weights = {k: v.detach().clone() for k, v in generator.state_dict().items()}
        return InitWeights(source, meta["model"], meta["data"], weights, weights, None, None, None,
                           f"G and G_ema from its exported generator (step {meta['step']}), D fresh")
    state = load_training_state(checkpoint)
    config = validate(state.get("config"), str(checkpoint))
    ema_generator, meta = load_checkpoint_generator(checkpoint, ema=True, state=state)
    raw_generator, _ = load_checkpoint_generator(checkpoint, ema=False, state=state)
    g_plain = {k: v.detach().clone() for k, v in plain_state_dict(raw_generator).items()}
    g_parametrized = raw_generator.state_dict() if config.model.g_spectral_norm else None
    d = state.get("D")
    if not isinstance(d, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items()):
        raise GankitError(f"--init {source}: {checkpoint} holds no discriminator weights (a damaged checkpoint?)")
    ema = {k: v.detach().clone() for k, v in plain_state_dict(ema_generator).items()}
    return InitWeights(source, meta["model"], meta["data"], ema, g_plain, g_parametrized, d, config,
                       f"G, G_ema and D from {checkpoint} (step {meta['step']}), not its optimizers")


def apply_init(source: str, config, G: nn.Module, D: nn.Module, G_ema: nn.Module | None, replica, log) -> None:
    """Loads SOURCE's weights into a fresh run's G, G_ema and D (see the module docstring); logs the source."""
    from gankit.models.spectral_norm import is_spectrally_normalized

    weights = replica.on_main(read_init_source, source)
    check_generator_fits(weights, config)
    with torch.no_grad():
        if not is_spectrally_normalized(G):
            G.load_state_dict(weights.g_plain)
        elif weights.g_parametrized is not None:  # the same parametrization, stored: W, u and v as trained
            G.load_state_dict(weights.g_parametrized)
        else:
            load_folded_weights(G, weights.g_plain)
        if G_ema is not None:
            G_ema.load_state_dict(weights.ema)
        if weights.d is not None:
            check_discriminator_fits(weights, config, D)
            D.load_state_dict(weights.d)
    log(f"{INIT_LOG_PREFIX}{source} ({weights.origin})")


def started_from(log_file: Path, source: str) -> bool:
    """Whether a run folder's log.txt says the run was started from SOURCE (--init), as its latest --init."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        return False
    recorded = [line for line in lines if line.startswith(INIT_LOG_PREFIX)]
    return bool(recorded) and recorded[-1].startswith(f"{INIT_LOG_PREFIX}{source} (")


# ---- the checks ---------------------------------------------------------------------------------

def _generator_keys(source_model, source_data, model, data) -> list[str]:
    """`--set` arguments that would make the config's generator the source's: the differing model keys
    (D's and spectral norm's aside) and data.resolution / channels."""
    settings = []
    for key, value in source_model.model_dump(mode="json").items():
        if key.startswith("d_") or key == "g_spectral_norm":
            continue
        if getattr(model, key) != getattr(source_model, key):
            settings.append(f"model.{key}={_yaml_value(value)}")
    for key in ("resolution", "channels"):
        if getattr(data, key) != getattr(source_data, key):
            settings.append(f"data.{key}={_yaml_value(getattr(source_data, key))}")
    return settings


def _yaml_value(value) -> str:
    """A value as `--set` takes it (YAML): strings bare, the rest as JSON (true, null, [64, 32])."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _differences(stored: dict, expected: dict) -> list[str]:
    """'name: source (shape) / config (shape)' for each tensor that differs, missing ones included."""
    found = []
    for key in sorted(set(stored) | set(expected)):
        have, want = stored.get(key), expected.get(key)
        if have != want:
            found.append(f"{key}: {'absent' if have is None else list(have)} in the source, "
                         f"{'absent' if want is None else list(want)} in the config")
    return found


def _refuse(source: str, what: str, differences: list[str], settings: list[str], extra: str = "") -> None:
    listed = "; ".join(differences[:MAX_LISTED]) + (f"; ... ({len(differences)} tensors)"
                                                    if len(differences) > MAX_LISTED else "")
    fix = (f"set {' '.join('--set ' + s for s in settings)} (the source's values)" if settings
           else "describe the source's architecture in the config")
    raise GankitError(f"--init {source}: the config builds a different {what} than the source's: {listed}. To "
                      f"fine-tune from it, {fix}{extra}")


def check_generator_fits(weights: InitWeights, config) -> None:
    """The config's generator must be the source's (names and shapes, before anything is loaded); G with
    spectral norm only from a source trained with it."""
    from gankit.checkpoint import _expected_tensors

    expected = {k: shape for k, (shape, _) in _expected_tensors(config.model, config.data, False).items()}
    stored = {k: tuple(v.shape) for k, v in weights.ema.items()}
    differences = _differences(stored, expected)
    if differences:
        classes = ""
        if config.model.conditioning != "none" and weights.data.num_classes != config.data.num_classes:
            classes = (f"; the source has {weights.data.num_classes} classes, the config's data "
                       f"{config.data.num_classes}: train on data with the source's classes")
        _refuse(weights.source, "generator", differences,
                _generator_keys(weights.model, weights.data, config.model, config.data), classes)
    if config.model.g_spectral_norm and not weights.model.g_spectral_norm:
        raise GankitError(f"--init {weights.source}: model.g_spectral_norm is true, but the source was trained "
                          "without it: a spectrally normalized G computes W / sigma(W), whose spectral norm is 1, and "
                          "cannot compute the source's weights. Set --set model.g_spectral_norm=false to fine-tune "
                          "from it")


def check_discriminator_fits(weights: InitWeights, config, D: nn.Module) -> None:
    """The config's discriminator must be the checkpoint's (names and shapes)."""
    expected = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in weights.d.items()}
    differences = _differences(stored, expected)
    if not differences:
        return
    source_config = weights.d_config
    settings = [f"model.{key}={_yaml_value(value)}" for key, value in source_config.model.model_dump(mode="json").items()
                if (key.startswith("d_") or key in ("arch", "conditioning", "hidden_layers", "label_embed_dim"))
                and key != "d_norm" and getattr(config.model, key) != getattr(source_config.model, key)]
    if discriminator_norm(config) != discriminator_norm(source_config):  # d_norm auto depends on loss.kind
        settings.append(f"model.d_norm={discriminator_norm(source_config)}")
    settings += [s for s in _generator_keys(source_config.model, source_config.data, config.model, config.data)
                 if s.startswith("data.")]
    _refuse(weights.source, "discriminator", differences, settings,
            ", or --init from the run's exported generator (RUN/generator.json) to start D fresh")


# ---- spectral norm ------------------------------------------------------------------------------

@torch.no_grad()
def load_folded_weights(G: nn.Module, plain: dict[str, torch.Tensor]) -> None:
    """Loads plain weights (spectral norm folded in: W' of norm about 1) into a spectrally normalized G:
    each parametrized W gets W', and its u, v W''s top singular vectors, so G computes W' / ||W'||_2."""
    from torch.nn.utils import parametrize

    parametrized_names = set()
    for module_name, module in G.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, parametrizations in module.parametrizations.items():
            full = f"{module_name}.{tensor_name}" if module_name else tensor_name
            parametrized_names.add(full)
            weight = plain[full].to(parametrizations.original)
            parametrizations.original.copy_(weight)
            for norm in parametrizations:  # one _SpectralNorm
                matrix = norm._reshape_weight_to_matrix(weight).double()
                left, _, right = torch.linalg.svd(matrix, full_matrices=False)
                u, v = left[:, 0], right[0]
                norm._u.copy_(u.to(norm._u))
                norm._v.copy_(v.to(norm._v))
    rest = {k: v for k, v in plain.items() if k not in parametrized_names}
    G.load_state_dict(rest, strict=False)
    missing = [k for k in G.state_dict() if ".parametrizations." not in f".{k}" and k not in rest]
    if missing:
        raise GankitError(f"the source has no weights for {missing[:MAX_LISTED]}")
