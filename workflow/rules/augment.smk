# ED-SAM augmentation: one job per (dataset, LDM, variant, group of source
# shards). A variant is "<transform>-rho<rho>-m<M>", e.g. edsam-rho0.5-m10.
# A group is shards_per_job (config) consecutive shards, named <first>-<last>;
# each shard is written atomically with its stats, and a rerun group skips the
# shards an earlier attempt finished (edsam.augment.groups). The group's JSON is
# the tracked output: LAION-400M's 41,000 shards stay a DAG Snakemake can build.
SYNTHETIC_SET = LAYOUT.synthetic_set("{dataset}", "{ldm}", "{transform}-rho{rho}-m{m}")
SUBSET = LAYOUT.synthetic_set("{dataset}", "{ldm}", "{transform}-rho{rho}-m{m}-of-m{superset}")


rule augment_shards:
    input:
        manifest=lambda wildcards: manifest(wildcards.dataset),
        ldm=lambda wildcards: PLAN.ldm_inputs(wildcards.ldm, wildcards.dataset),
    output:
        f"{SYNTHETIC_SET}/groups/{{group}}.json",
    params:
        sources=lambda wildcards: group_tars(wildcards.dataset, wildcards.group),
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        ldm=lambda wildcards: PLAN.ldm_source(wildcards.ldm, wildcards.dataset),
        settings=lambda wildcards: as_json(
            job_settings.augment(PLAN, wildcards.dataset, wildcards.ldm, wildcards.transform, wildcards.rho, wildcards.m)
        ),
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/{{group}}.log",
    threads: config["augment"]["threads"]
    priority: 40  # on the critical path to every ED-SAM training
    resources:
        **stage_resources("augment", gpu=job_resources.model_gpu(PLAN)),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam augment --ldm {params.ldm:q} --sources {params.sources:q} --out-dir {params.out_dir:q}"
        " --group {output:q} --settings {params.settings:q} > {log:q} 2>&1"


rule augment_manifest:
    input:
        lambda wildcards: expand(
            rules.augment_shards.output[0], group=shard_groups(wildcards.dataset), allow_missing=True
        ),
    output:
        f"{SYNTHETIC_SET}/manifest.json",
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/manifest.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam augment-manifest --out {output:q} {input:q} > {log:q} 2>&1"


# Table 2's sweep over M: with augment.m_superset, an M < M' set is copied out
# of the M' set (the first M samples per image; same seeds, same draws).
rule augment_subset_shards:
    input:
        LAYOUT.synthetic_set("{dataset}", "{ldm}", "{transform}-rho{rho}-m{superset}", "groups", "{group}.json"),
    output:
        f"{SUBSET}/groups/{{group}}.json",
    params:
        out_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/{{group}}.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam augment-subset --superset-group {input:q} --m {wildcards.m} --out-dir {params.out_dir:q}"
        " --group {output:q} > {log:q} 2>&1"


use rule augment_manifest as augment_subset_manifest with:
    input:
        lambda wildcards: expand(
            rules.augment_subset_shards.output[0], group=shard_groups(wildcards.dataset), allow_missing=True
        ),
    output:
        f"{SUBSET}/manifest.json",
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/manifest.log",
