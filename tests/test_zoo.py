"""The zoo (docs/zoo.md): `zoo:NAME` entries checked against their index, listed by `gankit zoo`, sampled,
evaluated and interpolated like exports, downloaded into the cache (from a loopback server here: nothing
touches the internet), stored in fp16, and used by `gankit train --init` to start a fresh run."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

import gankit.zoo as zoo
from conftest import needs_fashion_mnist
from gankit.checkpoint import export_generator, list_checkpoints, load_generator, load_training_state, write_half_export
from gankit.config import DataConfig, ModelConfig

TOY_SETTINGS = ["model.g_channels=8", "model.d_channels=8", "train.batch_size=16", "train.log_every=2",
                "train.checkpoint_every=2", "train.sample_every=2"]


def make_export(folder: Path, seed: int = 0, toy: bool = False, g_spectral_norm: bool = False,
                card: dict | None = None) -> Path:
    """A tiny exported generator with seeded random weights: a DCGAN at 16x16, or the 8-Gaussian toy's MLP."""
    from gankit.models import build_generator

    if toy:
        model = ModelConfig(arch="mlp", z_dim=2, g_channels=8, d_channels=8)
        data = DataConfig(source="toy-8gaussians")
    else:
        model = ModelConfig(z_dim=16, g_channels=8, d_channels=8, g_spectral_norm=g_spectral_norm)
        data = DataConfig(resolution=16)
    torch.manual_seed(seed)
    generator = build_generator(model, data)
    if g_spectral_norm:  # converge the power iteration, as training does, so the folded weights have norm 1
        generator.train()
        for _ in range(300):
            generator(torch.randn(2, model.z_dim))
    generator.eval()
    export_generator(folder, generator, model.model_dump(mode="json"), data.model_dump(mode="json"), 7)
    if card is not None:
        meta = json.loads((folder / "generator.json").read_text())
        meta["card"] = card
        (folder / "generator.json").write_text(json.dumps(meta))
    return folder


def write_index(entries: dict) -> None:
    (zoo.ZOO_DIR / zoo.INDEX_NAME).write_text(json.dumps({"format": "gankit-zoo", "version": 1, "entries": entries}))


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A zoo in tmp_path/zoo with entries `tiny` (images) and `toy` (points); the cache in tmp_path/cache."""
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    entries = {}
    for name, toy in (("tiny", False), ("toy", True)):
        make_export(tmp_path / "zoo" / name, toy=toy, card={"steps": 7, "metrics": {"swd": 1.5}})
        entries[name] = zoo.index_entry(tmp_path / "zoo" / name, f"a {name} generator")
    write_index(entries)
    return tmp_path / "zoo"


def test_the_shipped_index_is_valid_and_checks_out():
    # Every shipped entry's files are in the package and match their checksums, its card holds what
    # docs/zoo.md quotes, and it samples finite outputs of its data's shape.
    from gankit.models import output_shape

    shipped = [entry for entry in zoo.list_entries() if entry.url is None]
    assert {"dcgan-fashion-mnist", "wgangp-25gaussians", "sngan-proj-fashion-mnist"} <= {entry.name for entry in shipped}
    total = 0
    for entry in shipped:
        folder = zoo.resolve(entry.name)
        total += sum(f.stat().st_size for f in folder.iterdir())
        G, meta = load_generator(f"zoo:{entry.name}")
        card = json.loads((folder / "generator.json").read_text())["card"]
        for key in ("recipe", "steps", "images_seen", "wall_time_s", "machine", "metrics", "weights_dtype"):
            assert key in card, (entry.name, key)
        with torch.no_grad():
            out = G(torch.randn(4, meta["model"].z_dim))
        assert out.shape == (4, *output_shape(meta["data"])) and torch.isfinite(out).all()
    assert total < 25 * 2**20  # the bound on the package data


def test_listing_cards_and_unknown_names(tiny_zoo, run_cli):
    entries = zoo.list_entries()
    assert [e.name for e in entries] == ["tiny", "toy"]
    tiny_size = sum((tiny_zoo / "tiny" / f).stat().st_size for f in zoo.FILES)
    assert entries[0].shipped and entries[0].size == tiny_size

    code, out, _ = run_cli("zoo")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["zoo:tiny", "shipped", f"{tiny_size / 1e6:.1f}"]
    assert lines[0].endswith("a tiny generator") and lines[1].startswith("zoo:toy")
    assert "gankit sample zoo:NAME" in out and "--init zoo:NAME" in out

    code, out, _ = run_cli("zoo", "tiny")
    assert code == 0 and "zoo:tiny: a tiny generator" in out and "steps: 7" in out and "swd: 1.5" in out

    for argv in (("zoo", "nope"), ("sample", "zoo:nope", "--out", tiny_zoo / "x.png")):
        code, _, err = run_cli(*argv)
        assert code == 2 and "zoo:nope: no such zoo entry" in err and "zoo:tiny, zoo:toy" in err


def test_resolve_refuses_a_corrupted_entry(tiny_zoo, run_cli, tmp_path):
    assert zoo.resolve("zoo:tiny") == tiny_zoo / "tiny"
    weights = tiny_zoo / "tiny" / "generator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    code, _, err = run_cli("sample", "zoo:tiny", "--out", tmp_path / "x.png")
    assert code == 2 and "zoo:tiny: checksum mismatch for generator.safetensors" in err and "reinstall gankit" in err
    assert not (tmp_path / "x.png").exists()
    (tiny_zoo / "tiny" / "generator.json").unlink()
    code, _, err = run_cli("eval", "zoo:tiny", "--metrics", "swd")
    assert code == 2 and "generator.json is missing" in err

    (tiny_zoo / "index.json").write_text("{not json")
    code, _, err = run_cli("zoo")
    assert code == 2 and "damaged" in err


def test_sample_interpolate_and_eval_a_zoo_entry(tiny_zoo, run_cli, tmp_path):
    # An entry is its export: the same pictures, bit for bit.
    for command, extra in (("sample", ["--num", 9]), ("interpolate", ["--steps", 3, "--pairs", 2])):
        assert run_cli(command, "zoo:tiny", *extra, "--out", tmp_path / "zoo.png")[0] == 0
        assert run_cli(command, tiny_zoo / "tiny", *extra, "--out", tmp_path / "export.png")[0] == 0
        assert (tmp_path / "zoo.png").read_bytes() == (tmp_path / "export.png").read_bytes()
    code, _, err = run_cli("sample", "zoo:tiny", "--no-ema", "--out", tmp_path / "x.png")
    assert code == 2 and "zoo entry" in err and "EMA weights only" in err

    # eval: the real samples default to the entry's data section (the toy mixture), and no metrics.jsonl.
    code, out, err = run_cli("eval", "zoo:toy", "--metrics", "modes", "--num-samples", 2000, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert 0 <= result["modes"]["covered"] <= 8 and result["num_samples"] == 2000
    assert not list(tmp_path.rglob("metrics.jsonl"))
    code, out, _ = run_cli("eval", "zoo:toy", "--metrics", "modes", "--num-samples", 2000)
    assert code == 0 and "generated: the generator of zoo:toy (step 7)" in out


@needs_fashion_mnist
def test_eval_of_an_image_entry_compares_with_its_training_data(tiny_zoo, run_cli, tmp_path):
    code, out, err = run_cli("eval", "zoo:tiny", "--metrics", "swd", "--num-samples", 300)
    assert code == 0, err
    assert "generated: the generator of zoo:tiny (step 7)" in out and "real:      the train images of fashion-mnist" in out
    assert not list(tmp_path.rglob("metrics.jsonl"))


def test_fp16_export_loads_and_samples_within_rounding(tmp_path, run_cli):
    from safetensors import safe_open

    source = make_export(tmp_path / "fp32")
    write_half_export(source, tmp_path / "fp16")
    with safe_open(str(tmp_path / "fp16" / "generator.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "F16" in dtypes and "F32" not in dtypes
    meta = json.loads((tmp_path / "fp16" / "generator.json").read_text())
    assert meta["weights_dtype"] == "float16" and meta["model"]["g_channels"] == 8 and meta["step"] == 7

    full, _ = load_generator(source)
    half, _ = load_generator(tmp_path / "fp16")
    assert all(v.dtype != torch.float16 for v in half.state_dict().values())
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = full(z), half(z)
    error = (a - b).abs().max().item()
    assert 0 < error < 2e-2  # tanh outputs in [-1, 1]: fp16 weights round at about 1e-3 relative

    # bfloat16 through export_generator's dtype; a header whose dtype is neither float32 nor half is refused.
    export_generator(tmp_path / "bf16", half, meta["model"], meta["data"], 7, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "bf16" / "generator.json").read_text())["weights_dtype"] == "bfloat16"
    assert (load_generator(tmp_path / "bf16")[0](z) - a).abs().max().item() < 5e-2
    from safetensors.torch import load_file, save_file

    weights = load_file(str(source / "generator.safetensors"))
    first = next(k for k, v in weights.items() if v.dtype == torch.float32)
    weights[first] = weights[first].double()
    save_file(weights, str(source / "generator.safetensors"))
    code, _, err = run_cli("sample", source, "--out", tmp_path / "x.png")
    assert code == 2 and f"tensor {first}" in err and "F64" in err


class _Server:
    """A loopback HTTP server for a folder; `fail` makes it answer 500; `requests` counts GETs."""

    def __init__(self, folder: Path):
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.requests += 1
                if server.fail:
                    self.send_error(500, "broken on purpose")
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests, self.fail = 0, False
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_entries_are_fetched_verified_and_cached(tiny_zoo, tmp_path, run_cli):
    served = make_export(tmp_path / "served" / "remote", seed=3)
    server = _Server(tmp_path / "served")
    try:
        good = zoo.index_entry(served, "a downloaded generator", url=f"{server.url}/remote")
        broken = json.loads(json.dumps(good))
        broken["files"]["generator.safetensors"] = "0" * 64
        write_index({"remote": good, "broken": broken, "down": {**good, "url": f"{server.url}/missing"}})
        cache = tmp_path / "cache" / "zoo"
        code, out, _ = run_cli("zoo")
        assert code == 0 and "zoo:remote  download" in out and "zoo:broken" in out

        # A wrong checksum: the file received is not kept, not even as a temporary file.
        code, _, err = run_cli("sample", "zoo:broken", "--out", tmp_path / "x.png")
        assert code == 2 and "could not download" in err and "0" * 64 in err and "nothing was kept" in err
        assert [p.name for p in (cache / "broken").iterdir()] == ["generator.json"]  # the good file stays
        # A server error and a missing file.
        code, _, err = run_cli("sample", "zoo:down", "--out", tmp_path / "x.png")
        assert code == 2 and "HTTP 404" in err and not list((cache / "down").iterdir())
        server.fail = True
        code, _, err = run_cli("sample", "zoo:remote", "--out", tmp_path / "x.png")
        assert code == 2 and "HTTP 500" in err and not list((cache / "remote").iterdir())
        server.fail = False

        before = server.requests
        assert run_cli("sample", "zoo:remote", "--num", 4, "--out", tmp_path / "zoo.png")[0] == 0
        assert server.requests == before + 2
        assert sorted(p.name for p in (cache / "remote").iterdir()) == sorted(zoo.FILES)
        assert run_cli("sample", served, "--num", 4, "--out", tmp_path / "export.png")[0] == 0
        assert (tmp_path / "zoo.png").read_bytes() == (tmp_path / "export.png").read_bytes()
        assert run_cli("sample", "zoo:remote", "--num", 4, "--out", tmp_path / "again.png")[0] == 0
        assert server.requests == before + 2  # cached: no second download
        assert "zoo:remote  downloaded" in run_cli("zoo")[1]

        # A corrupted cached copy: the message says to delete it.
        (cache / "remote" / "generator.json").write_text("{}")
        code, _, err = run_cli("sample", "zoo:remote", "--out", tmp_path / "x.png")
        assert code == 2 and "checksum mismatch for generator.json" in err and "delete the cached copy" in err
    finally:
        server.close()
    # Offline: nothing listens on the port any more.
    shutil.rmtree(cache / "remote")
    code, _, err = run_cli("sample", "zoo:remote", "--out", tmp_path / "x.png")
    assert code == 2 and "could not download" in err and "(no network?)" in err
    assert not list((cache / "remote").iterdir())


# ---- --init -------------------------------------------------------------------------------------

def build_networks(argv_sets: list[str], preset: str = "gan-8gaussians"):
    """The config and fresh (G, D, G_ema) the training loop builds for preset + --set values."""
    from gankit.config import load
    from gankit.models import build_discriminator, build_generator
    from gankit.training.ema import make_ema
    from gankit.training.loop import discriminator_norm

    config = load(preset, argv_sets)
    torch.manual_seed(config.seed)
    G = build_generator(config.model, config.data)
    D = build_discriminator(config.model, config.data, discriminator_norm(config))
    G_ema = (make_ema(G, lambda: build_generator(config.model, config.data, parametrized=False))
             if config.train.ema is not None else None)
    return config, G, D, G_ema


def init_networks(source, argv_sets, preset="gan-8gaussians"):
    from gankit.training import distributed
    from gankit.training.init import apply_init

    config, G, D, G_ema = build_networks(argv_sets, preset)
    fresh_d = {k: v.clone() for k, v in D.state_dict().items()}
    lines = []
    apply_init(str(source), config, G, D, G_ema, distributed.current(), lines.append)
    return G, D, G_ema, fresh_d, lines


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_an_export_and_a_run_folder(tiny_zoo, tmp_path, run_cli):
    from safetensors.torch import load_file

    exported = load_file(str(tiny_zoo / "toy" / "generator.safetensors"))
    G, D, G_ema, fresh_d, lines = init_networks("zoo:toy", [*TOY_SETTINGS, "train.ema=0.99"])
    assert same(G.state_dict(), exported) and same(G_ema.state_dict(), exported)
    assert same(D.state_dict(), fresh_d)  # an export has no D
    assert lines == ["init: zoo:toy (G and G_ema from its exported generator (step 7), D fresh)"]

    # A run folder: its newest checkpoint's G, G_ema and D.
    run = tmp_path / "run"
    assert run_cli("train", "gan-8gaussians", "--out", run, "--set", "train.steps=4", "--set", "train.ema=0.9",
                   *[a for s in TOY_SETTINGS for a in ("--set", s)])[0] == 0
    state = load_training_state(list_checkpoints(run)[-1])
    G, D, G_ema, _, lines = init_networks(run, [*TOY_SETTINGS, "train.ema=0.99", "loss.kind=hinge"])
    assert same(G.state_dict(), state["G"]) and same(D.state_dict(), state["D"])
    assert same(G_ema.state_dict(), state["G_ema"]) and not same(state["G"], state["G_ema"])
    assert "step_000004.pt (step 4), not its optimizers" in lines[0]


def test_train_init_end_to_end_and_on_resume(tiny_zoo, tmp_path, run_cli):
    run = tmp_path / "tuned"
    sets = [a for s in TOY_SETTINGS for a in ("--set", s)]
    code, out, err = run_cli("train", "gan-8gaussians", "--out", run, "--set", "train.steps=2", *sets,
                             "--init", "zoo:toy")
    assert code == 0, err
    assert "init: zoo:toy (G and G_ema from its exported generator" in (run / "log.txt").read_text()
    # The same command again continues the run (resuming wins); another source is refused.
    code, out, err = run_cli("train", "gan-8gaussians", "--out", run, "--set", "train.steps=4", *sets,
                             "--init", "zoo:toy")
    assert code == 0, err
    assert "resuming wins over --init" in out and "at step 2" in out
    code, _, err = run_cli("train", run, "--set", "train.steps=6", "--init", tiny_zoo / "toy")
    assert code == 2 and "already has checkpoints" in err and "resuming wins over --init" in err
    code, _, err = run_cli("train", "gan-8gaussians", "--out", tmp_path / "x", "--init", "zoo:toy",
                           "--resume", list_checkpoints(run)[-1])
    assert code == 2 and "give one of them" in err


def test_init_refuses_a_different_generator(tiny_zoo, tmp_path, run_cli):
    code, _, err = run_cli("train", "gan-8gaussians", "--out", tmp_path / "x", "--set", "model.g_channels=16",
                           "--set", "model.hidden_layers=2", "--init", "zoo:toy")
    assert code == 2 and "--init zoo:toy: the config builds a different generator" in err
    assert "[8, 2] in the source, [16, 2] in the config" in err
    assert "--set model.g_channels=8 --set model.hidden_layers=3" in err
    assert not list_checkpoints(tmp_path / "x")
    from gankit.errors import GankitError

    with pytest.raises(GankitError, match=r"different generator.*--set model.g_channels=8 --set data.resolution=16"):
        init_networks("zoo:tiny", ["model.z_dim=16", "data.resolution=32", "model.conditioning=none"],
                      "dcgan-fashion-mnist")
    with pytest.raises(GankitError, match=r"--set model.arch=dcgan .*--set data.resolution=16"):
        init_networks("zoo:tiny", ["model.z_dim=16"], "gan-mlp-fashion-mnist")

    # From a run: D must fit too.
    run = tmp_path / "run"
    sets = [a for s in TOY_SETTINGS for a in ("--set", s)]
    assert run_cli("train", "gan-8gaussians", "--out", run, "--set", "train.steps=2", *sets)[0] == 0
    code, _, err = run_cli("train", "gan-8gaussians", "--out", tmp_path / "z", *sets, "--set", "train.steps=1",
                           "--set", "model.d_channels=16", "--init", run)
    assert code == 2 and "different discriminator" in err and "--set model.d_channels=8" in err
    assert "RUN/generator.json) to start D fresh" in err


def test_init_with_generator_spectral_norm(tmp_path):
    from gankit.models.spectral_norm import plain_state_dict

    dcgan = ["data.resolution=16", "model.z_dim=16", "model.g_channels=8", "model.d_channels=8",
             "model.g_spectral_norm=true", "model.conditioning=none"]
    source = make_export(tmp_path / "sn", g_spectral_norm=True)
    exported, _ = load_generator(source)
    G, _, G_ema, _, _ = init_networks(source, dcgan, "dcgan-fashion-mnist")
    assert same(G_ema.state_dict(), exported.state_dict())
    G.eval()
    computed, folded = plain_state_dict(G), exported.state_dict()
    for key, weight in folded.items():  # W' / ||W'||, with ||W'|| about 1 after the power iteration converged
        assert torch.allclose(computed[key], weight, rtol=1e-3, atol=1e-5), key
    z = torch.randn(8, 16)
    with torch.no_grad():
        assert torch.allclose(G(z), exported(z), atol=1e-3)

    plain = make_export(tmp_path / "plain")
    from gankit.errors import GankitError

    with pytest.raises(GankitError, match="trained without it.*model.g_spectral_norm=false"):
        init_networks(plain, dcgan, "dcgan-fashion-mnist")
