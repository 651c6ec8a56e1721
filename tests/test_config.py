import functools
import json

import pytest
import yaml

from conftest import REPO, snakemake
from edsam.config import ConfigError, load_config, load_schema, validate_config


def demo():
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


@functools.cache
def _paper_resolved():
    return json.dumps(load_config(REPO / "config" / "config.yaml"))


def paper():
    """config/config.yaml with the schema's defaults filled in (a fresh copy): it lists only what differs from
    them, and the cases below change keys it leaves to the defaults."""
    return json.loads(_paper_resolved())


@pytest.mark.parametrize("name", ["demo.yaml", "config.yaml"])
def test_shipped_configs_are_valid(name):
    config = load_config(REPO / "config" / name)
    assert config["download"]["min_success_rate"] > 0
    assert set(config) >= {"datasets", "download", "augment", "train", "evaluate", "corpus"}


def test_defaults_are_filled_in():
    config = validate_config({"datasets": {"demo": {"source": "corpus"}}})
    assert config["download"]["number_sample_per_shard"] == 10000
    assert config["augment"]["m"] == 10 and config["augment"]["rho"] == 0.5
    assert config["datasets"]["demo"]["url_col"] == "url"
    assert config["corpus"]["broken"] == {"missing": 0, "corrupt": 0, "not_image": 0, "bomb": 0}


def test_every_leaf_key_has_type_and_default():
    """Every knob has a type and a default (datasets' own keys excepted: they are per dataset)."""
    schema = load_schema()
    missing = []

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            if "properties" in sub:
                walk(sub, f"{path}.{key}")
            elif "default" not in sub or not ({"type", "$ref", "enum"} & set(sub)):
                missing.append(f"{path}.{key}")

    for block in ("download", "augment", "ldm", "train", "evaluate", "corpus", "domainbed"):
        walk(schema["properties"][block], block)
    assert missing == []


@pytest.mark.parametrize(
    "mutate, key, allowed",
    [
        (lambda c: c["augment"].update(transform="diagonal"), "augment.transform", "['edsam', 'random']"),
        (lambda c: c["download"].update(min_success_rate=1.5), "download.min_success_rate", "'maximum': 1"),
        (lambda c: c["augment"].update(m=-1), "augment.m", "'minimum': 1"),
        (lambda c: c["train"].update(epochs="many"), "train.epochs", "'type': 'integer'"),
        (lambda c: c["download"].update(colour="blue"), "download", "allowed keys"),
        (lambda c: c["datasets"]["cc3m"].pop("url_list"), "datasets.cc3m", "url_list"),
        (lambda c: c["datasets"]["cc3m"].update(source="ftp"), "datasets.cc3m.source", "['url_list', 'corpus', 'rehearsal']"),
        (lambda c: c["datasets"].update({"Bad-Name": {"source": "corpus"}}), "datasets", "does not match"),
        (lambda c: c["train"].update(default_model="vit-h-14"), "train.default_model", "not a key of train.models"),
        (lambda c: c["train"].update(precision="fp8"), "train.precision", "'amp'"),
        (lambda c: c["train"]["laclip"]["rewrites"].update(cc4m="x.csv"), "train.laclip.rewrites.cc4m", "no such dataset"),
        (lambda c: c["evaluate"].update(primary="imagenet21k"), "evaluate.primary", "not a key of evaluate.benchmarks"),
        (lambda c: c["evaluate"]["zeroshot"].append("mnist"), "evaluate.zeroshot", "not a key of evaluate.benchmarks"),
        (lambda c: c["evaluate"]["benchmarks"].update(x={"dataset": "imagenet", "root": "/d"}),
         "evaluate.benchmarks.x.dataset", "does not match"),
        (lambda c: c.update(shards_per_job=0), "shards_per_job", "'minimum': 1"),
        (lambda c: c["resources"]["stages"]["train"].update(runtime="3 days"), "resources.stages.train.runtime",
         "'type': 'integer'"),
        (lambda c: c["resources"]["stages"].update(gpu_nodes={"runtime": 1, "mem_mb": 100}), "resources.stages",
         "allowed keys"),
        (lambda c: c["resources"].update(gpu_model="a100; rm -rf /"), "resources.gpu_model", "does not match"),
        (lambda c: c["resources"]["stages"]["augment"].pop("mem_mb"), "resources.stages.augment", "mem_mb"),
        (lambda c: c["augment"].update(m_superset=1), "augment.m_superset", "'minimum': 2"),
        (lambda c: c["domainbed"]["compare"].update(edsam="laion"), "domainbed.compare.edsam",
         "not a key of domainbed.teachers"),
        (lambda c: c["domainbed"]["teachers"].update(x={"run": "cc4m/vit-b-16/clip-none/real"}),
         "domainbed.teachers.x.run", "names no dataset and model"),
        (lambda c: c["domainbed"]["teachers"].update(x={"run": "cc3m/vit-b-16"}), "domainbed.teachers.x.run",
         "does not match"),
        (lambda c: c["domainbed"]["datasets"]["pacs"].pop("domains"), "domainbed.datasets.pacs", "domains"),
        (lambda c: c["domainbed"]["datasets"]["pacs"].update(domains=["photo"]), "domainbed.datasets.pacs.domains",
         "too short"),
        (lambda c: c["domainbed"]["datasets"]["pacs"].update(domains=["../etc", "x"]),
         "domainbed.datasets.pacs.domains.0", "does not match"),
        (lambda c: c["domainbed"].update(holdout_fraction=1), "domainbed.holdout_fraction", "'exclusiveMaximum': 1"),
        (lambda c: c["domainbed"].update(templates=["a photo of a dog"]), "domainbed.templates.0", "does not match"),
        (lambda c: c["domainbed"]["vl2v"].update(variants=["kd"]), "domainbed.vl2v.variants.0", "'adip', 'sd'"),
        (lambda c: c["domainbed"].update(teachers={}), "domainbed.teachers", "no teacher to evaluate"),
        (lambda c: c["domainbed"]["vl2v"].update(teacher_targets="noisy"), "domainbed.vl2v.teacher_targets",
         "['augmented', 'clean']"),
        (lambda c: c["train"].update(advstyle={"step": "adam"}), "train.advstyle.step", "['gradient', 'sign']"),
        (lambda c: c["evaluate"]["probe"].update(protocol="sgd"), "evaluate.probe.protocol", "['clip', 'clip_benchmark']"),
        (lambda c: c["evaluate"]["probe"].update(c_min=10.0, c_max=1.0), "evaluate.probe.c_min", "not below c_max"),
        (lambda c: c["evaluate"]["probe"].update(val_fraction=1), "evaluate.probe.val_fraction", "'exclusiveMaximum': 1"),
        (lambda c: c["train"]["laclip"].update(min_hit_rate=1.5), "train.laclip.min_hit_rate", "'maximum': 1"),
        (lambda c: c["train"]["laclip"].update(allow_rule_rewrites="yes"), "train.laclip.allow_rule_rewrites",
         "'type': 'boolean'"),
        (lambda c: c.setdefault("ldm", {}).update(retrain={"reinit": ["unet", "text_encoder"], "train_text_encoder": False}),
         "ldm.retrain.reinit", "random features"),
        (lambda c: c.setdefault("ldm", {}).update(retrain={"batch_size": 8, "micro_batch_size": 16}),
         "ldm.retrain.micro_batch_size", "larger than batch_size"),
        (lambda c: c.setdefault("ldm", {}).update(retrain={"optimizer": "sgd"}), "ldm.retrain.optimizer",
         "['adamw', 'adafactor']"),
    ],
)
def test_invalid_values_name_the_key_and_what_is_allowed(mutate, key, allowed):
    config = paper()
    mutate(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    message = str(error.value)
    assert f"config key '{key}'" in message
    assert allowed in message


# Values the schema used to accept and the code could not run (issue 18), one case per key class; each
# message names the key and what is allowed.
TINY = lambda c: c.setdefault("ldm", {}).setdefault("tiny", {})  # noqa: E731 - config.yaml sets no ldm.tiny


@pytest.mark.parametrize(
    "mutate, key, allowed",
    [
        # counts: M = 0 is only the report's name for real data (it crashed augmentation: "slice step cannot be zero")
        (lambda c: c["augment"].update(m=0), "augment.m", "'minimum': 1"),
        # batches BatchNorm must see more than one value per channel in
        (lambda c: c["domainbed"]["vl2v"].update(batch_per_domain=1), "domainbed.vl2v.batch_per_domain", "'minimum': 2"),
        # seeds: numpy's legacy seeding (open_clip_train, scikit-learn) refuses 2^32 and more
        (lambda c: c.update(seed=2**32), "seed", "'maximum': 2147483647"),
        (lambda c: c["report"]["headline"].update(seeds=[0, 2**31]), "report.headline.seeds.1",
         "'maximum': 2147483647"),
        (lambda c: c["domainbed"].update(trial_seed=2**40), "domainbed.trial_seed", "'maximum': 2147483647"),
        (lambda c: c.setdefault("corpus", {}).update(seed=2**32), "corpus.seed", "'maximum': 2147483647"),
        (lambda c: c.setdefault("ldm", {}).setdefault("pretrain", {}).update(corpus_seed=2**32),
         "ldm.pretrain.corpus_seed", "'maximum': 2147483647"),
        # architecture sizes: 16 normalisation groups, 4 attention heads, the autoencoder's downsampling
        (lambda c: TINY(c).update(vae_channels=[16, 24]), "ldm.tiny.vae_channels.1", "'multipleOf': 16"),
        (lambda c: TINY(c).update(unet_channels=[40, 80]), "ldm.tiny.unet_channels.0", "'multipleOf': 16"),
        (lambda c: TINY(c).update(text_width=10), "ldm.tiny.text_width", "'multipleOf': 4"),
        (lambda c: TINY(c).update(image_size=66), "ldm.tiny.image_size", "not a multiple of 4"),
        # an encoder's quality range depends on the format (img2dataset refuses png quality 95 at start-up)
        (lambda c: c["download"].update(encode_format="png"), "download.encode_quality", "'maximum': 9"),
        (lambda c: c["download"].update(encode_quality=0), "download.encode_quality", "'minimum': 1"),
        # launch: several CPU nodes would run independent copies of one training
        (lambda c: c["train"].update(nodes=2, gpus=0), "train.nodes", "need train.gpus >= 1"),
    ],
)
def test_values_the_code_cannot_run_are_refused(mutate, key, allowed):
    config = paper()
    mutate(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert f"config key '{key}'" in str(error.value) and allowed in str(error.value)


def test_the_edges_the_code_can_run_are_accepted():
    config = paper()
    config["augment"].update(m=1)
    config["domainbed"]["vl2v"].update(batch_per_domain=2)
    config.update(seed=2**31 - 1)
    config["train"].update(nodes=2, gpus=1)
    config["download"].update(encode_format="png", encode_quality=9)
    config["ldm"] = {"tiny": {"image_size": 68, "vae_channels": [16, 32, 48], "text_width": 12}}
    validate_config(config)


def test_m_zero_from_a_target_path_fails_naming_m():
    """A set's M also comes from its path (…-m0/manifest.json), which the schema never sees."""
    from edsam.augment.generate import AugmentSettings

    with pytest.raises(ValueError, match="M .synthetic samples per image. must be at least 1, got M = 0"):
        AugmentSettings(m=0)
def test_paper_retrain_defaults_are_the_ldm_papers():
    """Table 4's Retrained-LDM at paper scale: LDM paper Table 15 (batch 680, 390K steps, lr 1e-4), the second
    stage (UNet + BERT) from fresh weights."""
    retrain = load_config(REPO / "config" / "config.yaml")["ldm"]["retrain"]
    assert (retrain["steps"], retrain["batch_size"], retrain["lr"]) == (390_000, 680, 1e-4)
    assert retrain["reinit"] == ["unet", "text_encoder"] and retrain["train_text_encoder"]


def test_a_later_config_file_removes_named_entries_with_null(tmp_path):
    """config/rehearsal.yaml is config/config.yaml plus overrides; config files merge key by key, so an overlay
    removes a dataset or benchmark by setting it to null."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "datasets": {"cc12m": None, "laion400m": None},
        "evaluate": {"benchmarks": {"sun397": None}, "zeroshot": ["imagenet1k"]},
        "report": {"datasets": {"cc12m": "cc3m", "laion400m": "cc3m"}, "benchmarks": {"sun397": None}},
        "ldm": {"retrain": {"micro_batch_size": None}},
        "train": {"laclip": {"rewrites": {"cc12m": None, "laion400m": None}}}}))
    config = load_config(REPO / "config" / "config.yaml", overlay)
    assert sorted(config["datasets"]) == ["cc3m"] and "sun397" not in config["evaluate"]["benchmarks"]
    assert config["report"]["datasets"] == {"cc3m": "cc3m", "cc12m": "cc3m", "laion400m": "cc3m"}
    assert config["ldm"]["retrain"]["micro_batch_size"] is None  # null stays a value outside named collections
    overlay.write_text(yaml.safe_dump({"datasets": {"cc12m": None, "laion400m": None},
                                       "train": {"laclip": {"rewrites": {"cc12m": None, "laion400m": None}}}}))
    with pytest.raises(ConfigError, match="report.datasets.cc12m"):  # still named by the report block
        load_config(REPO / "config" / "config.yaml", overlay)


def test_no_datasets_is_invalid():
    with pytest.raises(ConfigError, match="datasets"):
        validate_config({})


def test_config_file_must_be_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_workflow_refuses_an_invalid_config_before_any_job(workdir):
    result = snakemake(
        "-n", "--configfile", str(REPO / "config" / "demo.yaml"),
        "--config", "download={'min_success_rate': 2}", cwd=workdir, check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "config key 'download.min_success_rate'" in output
    assert not (workdir / "results").exists()


# ------------------------------------------------------------------ one source of defaults: the schema
SHIPPED = {"demo": ["demo.yaml"], "paper": ["config.yaml"], "rehearsal": ["config.yaml", "rehearsal.yaml"]}


def _property(schema, node, key):
    """The subschema of ``key`` inside the object schema ``node`` ($refs resolved), or None."""
    def deref(sub):
        while isinstance(sub, dict) and "$ref" in sub:
            sub = {**schema["definitions"][sub["$ref"].split("/")[-1]], **{k: v for k, v in sub.items() if k != "$ref"}}
        return sub

    node = deref(node)
    if key in node.get("properties", {}):
        return deref(node["properties"][key])
    extra = node.get("additionalProperties")
    return deref(extra) if isinstance(extra, dict) else None


def _schema_defaults(schema, node, config, path=""):
    """(dotted key, default) of every schema property with a default that the validator reaches in
    ``config``: properties of the objects present in it, entries of its named collections included."""
    found = []
    for key, value in config.items():
        sub = _property(schema, node, key)
        if isinstance(value, dict) and sub is not None:
            found += _schema_defaults(schema, sub, value, f"{path}{key}.")
    node = _property(schema, {"properties": {"x": node}}, "x")
    found += [(f"{path}{key}", sub["default"]) for key, sub in node.get("properties", {}).items() if "default" in sub]
    return found


def _restated(schema, node, raw, path=""):
    """Keys of the raw config file ``raw`` whose value equals what the schema would fill in there."""
    found = []
    for key, value in raw.items():
        sub = _property(schema, node, key)
        if sub is None:
            continue
        if "default" in sub and value == sub["default"]:
            found.append(f"{path}{key} = {value!r}")
        elif isinstance(value, dict):
            found += _restated(schema, sub, value, f"{path}{key}.")
    return found


def _snakemake_config(*names):
    """The config as the workflow sees it: snakemake's own loading and merging of --configfile files, named
    entries set to null removed, and snakemake.utils.validate filling the schema's defaults."""
    from snakemake.common.configfile import load_configfile
    from snakemake.utils import update_config, validate

    from edsam.config import drop_removed_entries

    config = {}
    for name in names:
        update_config(config, load_configfile(str(REPO / "config" / name)))
    drop_removed_entries(config)
    validate(config, schema=str(REPO / "config" / "schema.yaml"))
    return config


@pytest.mark.parametrize("combination", sorted(SHIPPED))
def test_the_workflow_and_load_config_resolve_a_config_alike_with_every_default(combination):
    """The workflow (snakemake's validate) and scripts and tests (edsam.config.load_config) fill the same
    defaults; every key the schema has a default for is in the resolved config, so a rule reading a key a
    config file leaves out finds the schema's value."""
    names = SHIPPED[combination]
    workflow = _snakemake_config(*names)
    ours = load_config(*(REPO / "config" / name for name in names))
    assert json.dumps(workflow, sort_keys=True) == json.dumps(ours, sort_keys=True)
    schema = load_schema()
    defaults = _schema_defaults(schema, schema, workflow)
    assert len(defaults) > 200  # every block is present (each has a default of {}), so all their keys are reached

    def lookup(dotted):
        node = workflow
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return KeyError
            node = node[part]
        return node

    assert [key for key, _ in defaults if lookup(key) is KeyError] == []


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_config_files_do_not_restate_the_schemas_defaults(name):
    """The schema owns the defaults; config/config.yaml and config/demo.yaml list only what differs, so a
    default changes in one place. A value that equals the default is an accident waiting to happen."""
    schema = load_schema()
    raw = yaml.safe_load((REPO / "config" / name).read_text())
    assert _restated(schema, schema, raw) == []


def test_restating_a_default_is_found():
    schema = load_schema()
    raw = paper_raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["augment"]["rho"] = 0.5
    raw["evaluate"]["benchmarks"]["stl10"]["metric"] = "acc1"
    raw.setdefault("resources", {}).setdefault("stages", {})["light"] = {"runtime": 60, "mem_mb": 4000}
    assert sorted(_restated(schema, schema, paper_raw)) == [
        "augment.rho = 0.5", "evaluate.benchmarks.stl10.metric = 'acc1'",
        "resources.stages.light = {'runtime': 60, 'mem_mb': 4000}"]


def test_config_reference_is_generated_from_the_schema():
    """config/README.md is python -m edsam.config_reference's rendering of config/schema.yaml: a schema change
    without regenerating it fails here."""
    from edsam.config_reference import README_PATH, render

    assert README_PATH == REPO / "config" / "README.md"
    assert README_PATH.read_text() == render(), "config/README.md is stale: run python -m edsam.config_reference"


def test_config_reference_rows():
    from edsam.config_reference import render

    text = render()
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in text.splitlines() if line.startswith("| `")}
    assert rows["`augment.rho`"] == "| `augment.rho` | number | `0.5` | 0 < x ≤ 10 | alpha ~ U(-rho, rho), of the default variant (others: by target path) |"
    assert rows["`train.models`"].startswith(
        '| `train.models` | object | `{"vit-b-16": "ViT-B-16", "rn50": "RN50"}` | at least 1 entry; names match')
    assert "requires `source`; with `source` = `url_list`: requires `url_list`, `expected_samples`" \
        in rows["`datasets.<name>`"]
    assert "| `resources.stages.train` | object | `{\"runtime\": 4320, \"mem_mb\": 256000}` |" in rows["`resources.stages.train`"]
    # a | inside a pattern is escaped, so the table keeps its five columns
    assert r"(clip\|laclip\|slip)" in rows["`domainbed.teachers.<name>.run`"]
    assert "## `datasets` (required)" in text
    # every schema property with a default has a row showing it
    schema = load_schema()

    def defaults(node, path):
        for key, sub in node.get("properties", {}).items():
            sub = _property(schema, node, key)
            if "default" in sub:
                yield f"{path}{key}", sub["default"]
            yield from defaults(sub, f"{path}{key}.")
        if isinstance(node.get("additionalProperties"), dict):
            yield from defaults(_property(schema, node, "<name>"), f"{path}<name>.")

    found = list(defaults(schema, ""))
    assert len(found) > 200
    for key, default in found:
        assert f"| `{key}` |" in rows.get(f"`{key}`", ""), key
        assert f" | `{json.dumps(default)}` | " in rows[f"`{key}`"], key


def test_config_reference_check_flags_a_stale_file(tmp_path):
    from edsam.config_reference import main

    out = tmp_path / "README.md"
    assert main(["--check", "--output", str(out)]) == 1  # missing
    assert main(["--output", str(out)]) == 0
    assert main(["--check", "--output", str(out)]) == 0
    out.write_text(out.read_text().replace("alpha ~ U(-rho, rho)", "alpha ~ N(0, rho)", 1))
    assert main(["--check", "--output", str(out)]) == 1
