# ED-SAM augmentation: one job per (dataset, LDM, variant, source shard), each
# writing one synthetic shard atomically, so finished shards are never redone.
# A variant is "<transform>-rho<rho>-m<M>", e.g. edsam-rho0.5-m10.


rule augment_shard:
    input:
        manifest=lambda wildcards: manifest(wildcards.dataset),
        ldm=lambda wildcards: ldm_inputs(wildcards.ldm, wildcards.dataset),
    output:
        shard=f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/shards/{{shard}}.tar",
        stats=f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/stats/{{shard}}.json",
    params:
        source=lambda wildcards: f"{download_dir(wildcards.dataset)}/shards/{wildcards.shard}.tar",
        ldm=lambda wildcards: ldm_source(wildcards.ldm, wildcards.dataset),
        settings=lambda wildcards: json.dumps(augment_settings(wildcards)),
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/{{shard}}.log",
    threads: config["augment"]["threads"]
    priority: 40  # on the critical path to every ED-SAM training
    resources:
        gpus=lambda wildcards: 0 if config["augment"]["device"] == "cpu" else 1,
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam augment --ldm {params.ldm:q} --source {params.source:q} --out {output.shard:q}"
        " --stats {output.stats:q} --settings {params.settings:q} > {log:q} 2>&1"


rule augment_manifest:
    input:
        # the shards too, not only their stats: a lost shard must make its job rerun
        shards=lambda wildcards: expand(
            rules.augment_shard.output.shard, shard=shard_ids(wildcards.dataset), allow_missing=True
        ),
        stats=lambda wildcards: expand(
            rules.augment_shard.output.stats, shard=shard_ids(wildcards.dataset), allow_missing=True
        ),
    output:
        f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/manifest.json",
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}/manifest.log",
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam augment-manifest --out {output:q} {input.stats:q} > {log:q} 2>&1"


# Table 2's sweep over M: with augment.m_superset, an M < M' set is copied out
# of the M' set (the first M samples per image; same seeds, same draws).
rule augment_subset_shard:
    input:
        shard=f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{superset}}/shards/{{shard}}.tar",
        stats=f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{superset}}/stats/{{shard}}.json",
    output:
        shard=f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/shards/{{shard}}.tar",
        stats=f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/stats/{{shard}}.json",
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/{{shard}}.log",
    conda:
        "../../envs/augment.yaml"
    shell:
        "python -m edsam augment-subset --superset {input.shard:q} --superset-stats {input.stats:q} --m {wildcards.m}"
        " --out {output.shard:q} --stats {output.stats:q} > {log:q} 2>&1"


use rule augment_manifest as augment_subset_manifest with:
    input:
        shards=lambda wildcards: expand(
            rules.augment_subset_shard.output.shard, shard=shard_ids(wildcards.dataset), allow_missing=True
        ),
        stats=lambda wildcards: expand(
            rules.augment_subset_shard.output.stats, shard=shard_ids(wildcards.dataset), allow_missing=True
        ),
    output:
        f"{RESULTS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/manifest.json",
    log:
        f"{LOGS}/augment/{{dataset}}/{{ldm}}/{{transform}}-rho{{rho}}-m{{m}}-of-m{{superset}}/manifest.log",
