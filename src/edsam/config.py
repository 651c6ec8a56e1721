"""Config loading and validation against ``config/schema.yaml``.

The Snakefile validates with ``snakemake.utils.validate`` (which also fills in
the schema's defaults); when that fails, ``explain_errors`` turns jsonschema's
errors into one line per bad key -- the dotted key, the value, and what is
allowed -- instead of a dump of the schema. Scripts and tests outside
Snakemake use ``load_config``, which does the same with jsonschema directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"


class ConfigError(ValueError):
    """An invalid config value; the message names each bad key and what is allowed."""


def _with_defaults(validator_class):
    """jsonschema's documented recipe: fill ``default`` values while validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    default = subschema["default"]
                    instance[name] = default.copy() if isinstance(default, (dict, list)) else default
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _key(error) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator in ("required", "additionalProperties") and not parts:
        return "<top level>"
    return ".".join(parts) or "<top level>"


def _describe(error) -> str:
    schema = error.schema
    if error.validator == "enum":
        return f"{error.instance!r} is not allowed; allowed values: {schema['enum']}"
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        return f"{error.message}" + (f"; allowed keys: {allowed}" if allowed else "")
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "type"):
        bounds = {k: schema[k] for k in ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                         "multipleOf") if k in schema}
        why = f"; {schema['description']}" if "description" in schema else ""
        return f"{error.message} (allowed: {bounds}{why})"
    return error.message


def explain_errors(config: dict, schema: dict) -> list[str]:
    """One line per validation error: ``config key 'a.b': <problem>``."""
    validator = Draft202012Validator(schema)
    lines = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        # if/then and $ref failures carry the real cause in their context
        leaves = error.context or [error]
        for leaf in leaves:
            lines.append(f"config key '{_key(leaf)}': {_describe(leaf)}")
    return lines


def cross_check(config: dict) -> list[str]:
    """What a JSON schema cannot say: keys that must name other config entries (defaults filled)."""
    lines = []
    train = config.get("train", {})
    if train.get("default_model") not in train.get("models", {}):
        lines.append(f"config key 'train.default_model': {train.get('default_model')!r} is not a key of "
                     f"train.models {sorted(train.get('models', {}))}")
    for dataset in train.get("laclip", {}).get("rewrites", {}):
        if dataset not in config.get("datasets", {}):
            lines.append(f"config key 'train.laclip.rewrites.{dataset}': no such dataset "
                         f"(datasets: {sorted(config.get('datasets', {}))})")
    evaluate = config.get("evaluate", {})
    benchmarks = evaluate.get("benchmarks", {})
    named = [("evaluate.primary", evaluate.get("primary"))] if benchmarks else []
    named += [(f"evaluate.{k}", v) for k in ("zeroshot", "linear_probe") for v in evaluate.get(k, [])]
    for key, name in named:
        if name not in benchmarks:
            lines.append(f"config key '{key}': {name!r} is not a key of evaluate.benchmarks {sorted(benchmarks)}")
    probe = evaluate.get("probe", {})
    if probe.get("c_min", 0) >= probe.get("c_max", 1):
        lines.append(f"config key 'evaluate.probe.c_min': {probe['c_min']} is not below c_max {probe['c_max']}")
    report = config.get("report", {})
    for block, targets in (("datasets", config.get("datasets", {})), ("models", train.get("models", {})),
                           ("benchmarks", benchmarks)):
        for paper, ours in report.get(block, {}).items():
            if ours not in targets:
                lines.append(f"config key 'report.{block}.{paper}': {ours!r} is not one of {sorted(targets)}")
    headline = report.get("headline", {})
    if headline.get("dataset") is not None and headline["dataset"] not in config.get("datasets", {}):
        lines.append(f"config key 'report.headline.dataset': {headline['dataset']!r} is not one of "
                     f"{sorted(config.get('datasets', {}))}")
    if headline.get("model") is not None and headline["model"] not in train.get("models", {}):
        lines.append(f"config key 'report.headline.model': {headline['model']!r} is not one of "
                     f"{sorted(train.get('models', {}))}")
    for name in headline.get("benchmarks") or []:
        if name not in evaluate.get("zeroshot", []):
            lines.append(f"config key 'report.headline.benchmarks': {name!r} is not evaluated zero-shot "
                         f"(evaluate.zeroshot: {evaluate.get('zeroshot', [])})")
    return lines + _cross_check_runnable(config) + _cross_check_ldm(config) + _cross_check_domainbed(config)


def _cross_check_runnable(config: dict) -> list[str]:
    """Combinations of valid values that the code cannot run."""
    lines = []
    train = config.get("train", {})
    if train.get("nodes", 1) > 1 and train.get("gpus", 0) < 1:
        lines.append(f"config key 'train.nodes': {train['nodes']} nodes need train.gpus >= 1 (a CPU run is one "
                     "process; srun would start independent copies of the same training)")
    tiny = config.get("ldm", {}).get("tiny", {})
    if "image_size" in tiny and "vae_channels" in tiny:
        factor = 2 ** (len(tiny["vae_channels"]) - 1)
        if tiny["image_size"] % factor:
            lines.append(f"config key 'ldm.tiny.image_size': {tiny['image_size']} is not a multiple of {factor}, the "
                         f"downsampling of {len(tiny['vae_channels'])} autoencoder blocks (ldm.tiny.vae_channels): "
                         "decoded images would not match the inputs")
    return lines


def _cross_check_ldm(config: dict) -> list[str]:
    retrain, lines = config.get("ldm", {}).get("retrain", {}), []
    if "text_encoder" in retrain.get("reinit", []) and not retrain.get("train_text_encoder", True):
        lines.append("config key 'ldm.retrain.reinit': a fresh text_encoder that is not trained "
                     "(train_text_encoder: false) would condition the UNet on random features")
    micro, batch = retrain.get("micro_batch_size"), retrain.get("batch_size")
    if micro is not None and batch is not None and micro > batch:
        lines.append(f"config key 'ldm.retrain.micro_batch_size': {micro} is larger than batch_size {batch}")
    return lines


def _cross_check_domainbed(config: dict) -> list[str]:
    """Teachers name a dataset and model of this config; compare names teachers; datasets need a teacher."""
    domainbed, lines = config.get("domainbed", {}), []
    teachers = domainbed.get("teachers", {})
    for name, teacher in teachers.items():
        if "run" in teacher:
            dataset, model = teacher["run"].split("/")[:2]
            if dataset not in config.get("datasets", {}) or model not in config.get("train", {}).get("models", {}):
                lines.append(f"config key 'domainbed.teachers.{name}.run': {teacher['run']!r} names no dataset and "
                             f"model of this config (datasets: {sorted(config.get('datasets', {}))}, train.models: "
                             f"{sorted(config.get('train', {}).get('models', {}))})")
    for role, name in domainbed.get("compare", {}).items():
        if name is not None and name not in teachers:
            lines.append(f"config key 'domainbed.compare.{role}': {name!r} is not a key of domainbed.teachers {sorted(teachers)}")
    if domainbed.get("datasets") and not teachers:
        lines.append("config key 'domainbed.teachers': domainbed.datasets are given but no teacher to evaluate")
    return lines


# Named entries a later config file can remove by setting them to null (config/rehearsal.yaml over
# config/config.yaml): config files are merged key by key, so an overlay could otherwise only add entries.
REMOVABLE = ("datasets", "train.models", "evaluate.benchmarks", "domainbed.datasets", "domainbed.teachers",
             "report.datasets", "report.models", "report.benchmarks", "report.rho_values", "report.m_values",
             "train.laclip.rewrites")


def drop_removed_entries(config: dict) -> dict:
    """Delete the ``name: null`` entries of the REMOVABLE collections, in place."""
    for dotted in REMOVABLE:
        *parents, last = dotted.split(".")
        block = config
        for part in parents:
            block = block.get(part) if isinstance(block, dict) else None
        entries = block.get(last) if isinstance(block, dict) else None
        if isinstance(entries, dict):
            for name in [k for k, v in entries.items() if v is None]:
                del entries[name]
    return config


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place (filling defaults) or raise ConfigError."""
    schema = schema if schema is not None else load_schema()
    drop_removed_entries(config)
    lines = explain_errors(config, schema)
    if not lines:
        for _ in _with_defaults(Draft202012Validator)(schema).iter_errors(config):
            pass  # fills the defaults in
        # a default can complete an invalid combination (download.encode_format png + the default quality)
        lines = explain_errors(config, schema)
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    lines = cross_check(config)
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    return config


def load_config(*paths: str | Path, overrides: dict[str, Any] | None = None) -> dict:
    """Read YAML config files (later ones update earlier ones), validate, fill defaults."""
    config: dict = {}
    for path in paths:
        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a YAML mapping, not {type(loaded).__name__}")
        deep_update(config, loaded)
    deep_update(config, overrides or {})
    return validate_config(config)


def deep_update(base: dict, update: dict) -> dict:
    """``update`` over ``base``, in place: mappings merge key by key, anything else replaces (how config files
    combine)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base
