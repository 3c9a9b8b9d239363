"""Fuzzing `gankit train`'s config handling with hypothesis, up to the moment training would start.

Every input must end in exit code 0 (accepted, with the values asked for) or 2 (one message), never an
exception. The training function is replaced by one that records the config it was given."""

import contextlib
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gankit.cli import main
from gankit.config import METRIC_NAMES, Config, parse_override

PRESET = "dcgan-fashion-mnist"
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def run_train(argv_tail: list[str], cwd: Path) -> tuple[int, str, Config | None]:
    """(exit code, stderr, config that training received) for `gankit train <argv_tail>` run in cwd."""
    received = []

    def record(config, run_dir, resume_from, device, init_from=None):
        received.append(config)
        return {"interrupted": None}

    err = io.StringIO()
    with mock.patch("gankit.training.loop.train", record), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.chdir(cwd):
        try:
            code = main(["train", *argv_tail])
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code
    return code, err.getvalue(), received[0] if received else None


def assert_clean_outcome(code, err, config):
    assert "Traceback" not in err
    if code == 0:
        assert config is not None and Config.model_validate(config.model_dump(mode="json")) == config
    else:
        assert code == 2 and config is None, (code, err)
        assert err.startswith("gankit train: error: ") or "usage: gankit" in err, err
        assert len(err.strip()) > len("gankit train: error: ")


def schema_keys() -> dict[str, object]:
    """Every dotted key of the schema, with its pydantic field."""
    keys = {}
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.update({f"{name}.{sub}": f for sub, f in field.annotation.model_fields.items()})
        else:
            keys[name] = field
    return keys


KEYS = sorted(schema_keys())
SECTIONS = sorted({k.split(".")[0] for k in KEYS})
identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
printable = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=25)
yaml_texts = st.one_of(
    st.integers(-10**30, 10**30).map(str),
    st.floats().map(repr),
    st.sampled_from([".nan", ".inf", "-.inf", "1e400", "2e-4", "2.0e-4", "0x10", "0o17", "1_000", "yes", "no", "on",
                     "true", "False", "null", "~", "", " ", "[]", "{}", "[1, 2]", "[0.5, 0.999]", "[0.5]", "{a: 1}",
                     "[", "]", "{", "'", '"', "- a", "a: b", "@", "`", "%YAML 1.1", "2001-12-14", "12:30:00",
                     "!!python/object/apply:os.system ['echo ran']", "!!binary aGVsbG8=", "&a [*a]", "*x",
                     "[fid, swd]", "[nope]", "<<: {}", "---", "...", "#", "a\tb", "\u00e9t\u00e9", "[" * 200]),
    printable,
)
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(SECTIONS),
                 st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS), identifiers),
                 st.lists(identifiers, min_size=1, max_size=4).map(".".join), printable)
random_overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, yaml_texts), printable)


def nested_value(path: list[str], config: Config):
    node = config.model_dump(mode="json")
    for part in path:
        node = node[part]
    return node


# Values each key accepts on top of the dcgan-fashion-mnist preset (whatever the other keys hold).
def floats_in(low, high, **kw):
    return st.floats(low, high, allow_nan=False, allow_infinity=False, **kw)


VALID = {
    "seed": st.integers(0, 2**63 - 1),
    "name": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9 _.+-]{0,30}", fullmatch=True).map(lambda s: s.strip() or "x"),
    "data.resolution": st.sampled_from([16, 32, 64, 128, 256]),
    "data.channels": st.sampled_from([1, 3]),
    "data.hflip": st.booleans(),
    "data.max_images": st.one_of(st.none(), st.integers(1, 10**9)),
    "model.z_dim": st.integers(1, 4096),
    "model.g_channels": st.integers(1, 4096),
    "model.d_channels": st.integers(1, 4096),
    "model.g_upsample": st.sampled_from(["transposed", "nearest", "pixelshuffle"]),
    "model.d_norm": st.sampled_from(["auto", "batch", "layer", "none"]),
    "loss.kind": st.sampled_from(["gan", "nsgan", "lsgan", "wgan", "wgan-gp", "hinge"]),
    "loss.gp_weight": floats_in(0, 1e6),
    "loss.clip": floats_in(1e-9, 10),
    "loss.drift": floats_in(0, 10),
    "train.steps": st.integers(1, 10**12),
    "train.batch_size": st.integers(1, 4096),
    "train.n_critic": st.integers(1, 100),
    "train.optimizer": st.sampled_from(["adam", "rmsprop"]),
    "train.g_lr": floats_in(1e-12, 10),
    "train.d_lr": floats_in(1e-12, 10),
    "train.betas": st.tuples(floats_in(0, 1, exclude_max=True), floats_in(0, 1, exclude_max=True)).map(list),
    "train.ema": st.one_of(st.none(), floats_in(0, 1, exclude_max=True)),
    "train.precision": st.sampled_from(["fp32", "bf16", "fp16", "auto"]),
    "train.log_every": st.integers(1, 10**9),
    "train.sample_every": st.integers(1, 10**9),
    "train.checkpoint_every": st.integers(1, 10**9),
    "train.keep_checkpoints": st.integers(1, 1000),
    "train.grid_size": st.integers(1, 1024),
    "eval.every": st.integers(0, 10**9),
    "eval.num_samples": st.integers(1, 10**9),
    "eval.metrics": st.lists(st.sampled_from(METRIC_NAMES), max_size=3, unique=True),
}


def as_yaml(value) -> str:
    """YAML text for a value, as a user would type it after `--set key=`."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


valid_overrides = st.sampled_from(sorted(VALID)).flatmap(
    lambda key: VALID[key].map(lambda value: f"{key}={as_yaml(value)}"))


def test_fuzz_set_overrides(record_property):
    examples = {"accepted": 0, "refused": 0}

    # Random settings mixed with valid ones (three to one), so that both outcomes are explored.
    overrides = st.one_of(random_overrides, valid_overrides, valid_overrides, valid_overrides)

    @settings(FUZZ, max_examples=120)
    @given(st.lists(overrides, max_size=4), st.booleans())
    def check(items, with_out):
        with tempfile.TemporaryDirectory() as tmp:
            argv = [PRESET, *(["--out", "run"] if with_out else [])]
            for item in items:
                argv += ["--set", item]
            code, err, config = run_train(argv, Path(tmp))
            assert_clean_outcome(code, err, config)
            examples["accepted" if code == 0 else "refused"] += 1
            if code == 0:
                # What was set is what training gets (for the last setting of each key, when no key is a
                # section holding another).
                parsed = [parse_override(item) for item in items]
                dotted = [".".join(p) for p, _ in parsed]
                if not any(a != b and b.startswith(a + ".") for a in dotted for b in dotted):
                    for path, value in dict((".".join(p), (p, v)) for p, v in parsed).values():
                        used = nested_value(path, config)
                        assert used == (list(value) if isinstance(value, tuple) else value) or \
                            (isinstance(value, dict) and isinstance(used, dict)), (path, value, used)
                # The run folder is where it was asked to be, inside the working directory.
                run_dir = Path(tmp) / ("run" if with_out else Path("runs") / config.name)
                assert (run_dir / ".lock").is_file()

    check()
    assert examples["accepted"] > 10 and examples["refused"] > 10, examples
    record_property("reliability", json.dumps({
        "point": 5, "fault": "random `--set` strings (hypothesis: real and invented keys, YAML edge values, "
                             "free text)", "trials": sum(examples.values()),
        "outcome": f"{examples['refused']} refused with exit 2 and a message, {examples['accepted']} accepted with "
                   "the values asked for; no exception"}))


def test_fuzz_valid_settings_are_accepted_as_given(record_property):
    count = {"n": 0}

    @settings(FUZZ, max_examples=80)
    @given(st.dictionaries(st.sampled_from(sorted(VALID)), st.none(), min_size=1, max_size=6).flatmap(
        lambda chosen: st.fixed_dictionaries({k: VALID[k] for k in chosen})))
    def check(values):
        with tempfile.TemporaryDirectory() as tmp:
            argv = [PRESET, "--out", "run"]
            for key, value in values.items():
                argv += ["--set", f"{key}={as_yaml(value)}"]
            code, err, config = run_train(argv, Path(tmp))
            assert code == 0, (values, err)
            for key, value in values.items():
                assert nested_value(key.split("."), config) == value, key
        count["n"] += 1

    check()
    record_property("reliability", json.dumps({
        "point": 5, "fault": "random valid settings of 31 keys (hypothesis), as `--set key=value`",
        "trials": count["n"], "outcome": "all accepted, each value reaching training unchanged"}))


# Values each key refuses, whatever else is set.
INVALID = {
    **{key: st.one_of(st.integers(-10**6, 0), st.sampled_from(["'12'", "1.5", "[1]", "{a: 1}", "true", "abc"]))
       for key in ("train.steps", "train.batch_size", "train.n_critic", "train.log_every", "train.sample_every",
                   "train.checkpoint_every", "train.keep_checkpoints", "model.z_dim", "model.g_channels",
                   "model.d_channels", "eval.num_samples")},
    "seed": st.one_of(st.integers(-10**6, -1), st.sampled_from(["1.5", "'0'", "null"])),
    "model.z_dim": st.one_of(st.integers(4097, 10**9), st.integers(-10, 0)),
    "data.resolution": st.sampled_from([0, 1, 2048, 40, 48, "'32'", "32.0", "null"]),
    "train.g_lr": st.one_of(floats_in(-1e9, 0), st.sampled_from(["'2e-4'", "[]", ".nan", "-.inf", "null"])),
    "train.betas": st.sampled_from(["[0.5]", "[0.5, 1.0]", "[-0.1, 0.9]", "[0.5, 0.9, 0.9]", "0.5", "['a', 'b']"]),
    "train.ema": st.sampled_from(["1.0", "-0.1", "2", "'0.9'"]),
    "loss.kind": identifiers.filter(lambda s: s not in ("gan", "nsgan", "lsgan", "wgan", "hinge")),
    "model.arch": identifiers.filter(lambda s: s not in ("mlp", "dcgan", "pgan")),
    "data.source": identifiers,
    "train.precision": st.sampled_from(["fp8", "FP32", "32", "null"]),
    "eval.metrics": st.sampled_from(["[nope]", "fid", "[1]", "[fid, made_up]"]),
    "name": st.sampled_from(["''", "'.'", "'..'", "'a/b'", "'../escape'", "'a\\b'", '"a\\x00b"', '"a\\nb"', "[a]", "1"]),
}


def test_fuzz_invalid_values_are_refused_naming_the_key(record_property):
    count = {"n": 0}

    @settings(FUZZ, max_examples=100)
    @given(st.sampled_from(sorted(INVALID)).flatmap(lambda key: st.tuples(st.just(key), INVALID[key])),
           st.sampled_from(["", "typo"]))
    def check(key_value, unknown):
        key, value = key_value
        with tempfile.TemporaryDirectory() as tmp:
            argv = [PRESET, "--out", "run", "--set", f"{key}={value}"]
            if unknown:  # an unknown key next to the bad value: both are reported
                argv += ["--set", f"{key.rsplit('.', 1)[0]}.{unknown}_{key.rsplit('.', 1)[-1]}=1"]
            code, err, config = run_train(argv, Path(tmp))
            assert code == 2 and config is None, (key, value, err)
            assert err.startswith("gankit train: error: ") and "Traceback" not in err
            assert key.split(".")[-1] in err, (key, err)
            assert not (Path(tmp) / "run").exists()  # nothing created for a refused config
        count["n"] += 1

    check()
    record_property("reliability", json.dumps({
        "point": 5, "fault": "random out-of-range, wrongly typed or unknown values for 23 keys (hypothesis)",
        "trials": count["n"], "outcome": "all refused with exit 2, a message naming the key, and no run folder"}))


config_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(), printable),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from([*SECTIONS, *(k.split(".")[-1] for k in KEYS)]), identifiers),
                        children, max_size=5)),
    max_leaves=20,
)


def test_fuzz_config_files(record_property):
    examples = {"accepted": 0, "refused": 0}
    preset = yaml.safe_load((Path(__file__).parents[1] / "src/gankit/presets" / f"{PRESET}.yaml").read_text())

    @settings(FUZZ, max_examples=120)
    @given(st.one_of(
        config_trees.map(lambda tree: yaml.safe_dump(tree, allow_unicode=True).encode()),
        # The preset with one key replaced by a random tree.
        st.tuples(st.sampled_from(KEYS), config_trees).map(lambda kv: yaml.safe_dump(
            {**preset, **({kv[0]: kv[1]} if "." not in kv[0] else
                          {kv[0].split(".")[0]: {**preset.get(kv[0].split(".")[0], {}), kv[0].split(".")[1]: kv[1]}})}
        ).encode()),
        printable.map(str.encode),
        st.binary(max_size=200),
    ))
    def check(content):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.yaml").write_bytes(content)
            code, err, config = run_train(["config.yaml", "--out", "run"], Path(tmp))
            assert_clean_outcome(code, err, config)
            examples["accepted" if code == 0 else "refused"] += 1

    check()
    assert examples["refused"] > 10 and examples["accepted"] > 0, examples
    record_property("reliability", json.dumps({
        "point": 5, "fault": "random config files (hypothesis: random YAML trees, the preset with one key "
                             "replaced by a random tree, free text, random bytes)", "trials": sum(examples.values()),
        "outcome": f"{examples['refused']} refused with exit 2 and a message, {examples['accepted']} accepted; "
                   "no exception"}))


HOSTILE_FILES = {
    "not UTF-8": b"name: \xff\xfe\n",
    "nested 5000 deep": b"name: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "alias bomb (9^9 elements)": ("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)) + "name: *a8\n").encode(),
    "self-referencing alias": b"name: &a [*a]\n",
    "python object tag": b"name: !!python/object/apply:os.system ['touch ran-code']\n",
    "name escaping runs/": b"name: ../../escaped\n",
    "name with NUL": b'name: "a\\0b"\n',
    "top level a list": b"- name: x\n",
    "top level a string": b"just text\n",
}


def test_hostile_config_files_are_refused_quickly(tmp_path, record_property):
    import time

    for what, content in HOSTILE_FILES.items():
        folder = tmp_path / what.replace(" ", "_").replace("/", "_")
        folder.mkdir()
        (folder / "config.yaml").write_bytes(content)
        started = time.monotonic()
        code, err, config = run_train(["config.yaml"], folder)
        assert code == 2 and err.startswith("gankit train: error: ") and "Traceback" not in err, (what, err)
        assert time.monotonic() - started < 30 and len(err) < 2000, what  # no blow-up in time or message size
        assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"], what  # nothing created, nothing ran
    assert not (tmp_path.parent / "escaped").exists()
    record_property("reliability", json.dumps({
        "point": 5, "fault": "hostile config files: " + ", ".join(HOSTILE_FILES), "trials": len(HOSTILE_FILES),
        "outcome": "each refused with exit 2 and a short message, nothing created and no code run"}))
