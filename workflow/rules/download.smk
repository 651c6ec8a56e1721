# Download stage: URL list -> webdataset shards (img2dataset) -> manifest.
#
# The shard folder is not a declared output: Snakemake deletes a job's outputs
# before rerunning it, and img2dataset's incremental mode needs the finished
# shards left in place to resume. The manifest (written last, atomically) is
# the output; how many shards there are is known only then (a checkpoint).
# `python -m edsam --log {log}` writes the job's output to its log and its
# error line (e.g. the success-rate gate's reason) also to the console.


checkpoint download:
    input:
        lambda wildcards: PLAN.download_inputs(wildcards.dataset),
    output:
        manifest=LAYOUT.download_manifest("{dataset}"),
    params:
        settings=lambda wildcards: as_json(job_settings.download(PLAN, wildcards.dataset)),
        out=lambda wildcards, output: os.path.dirname(output.manifest),
    log:
        f"{LOGS}/download/{{dataset}}.log",
    threads: lambda wildcards: config["download"]["processes_count"]
    priority: 50  # everything downstream waits for it
    resources:
        **stage_resources("download"),
    conda:
        "../../envs/download.yaml"
    shell:
        "python -m edsam --log {log:q} download --dataset {wildcards.dataset:q} --settings {params.settings:q}"
        " --out {params.out:q}"


rule verify_shards:
    input:
        manifest=f"{RESULTS}/download/{{dataset}}/manifest.json",
    output:
        f"{RESULTS}/download/{{dataset}}/verified/{{group}}.json",
    params:
        tars=lambda wildcards: group_tars(wildcards.dataset, wildcards.group),
        max_pixels=config["download"]["max_image_pixels"],
    log:
        f"{LOGS}/download/{{dataset}}/verify_{{group}}.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/download.yaml"
    shell:
        "python -m edsam --log {log:q} verify-shards --tars {params.tars:q} --manifest {input.manifest:q}"
        " --max-pixels {params.max_pixels} --out {output:q}"


rule download_report:
    input:
        manifest=f"{RESULTS}/download/{{dataset}}/manifest.json",
        verified=lambda wildcards: expand(
            rules.verify_shards.output[0], dataset=wildcards.dataset, group=shard_groups(wildcards.dataset)
        ),
    output:
        f"{RESULTS}/download/{{dataset}}/report.tsv",
    log:
        f"{LOGS}/download/{{dataset}}/report.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/download.yaml"
    shell:
        "python -m edsam --log {log:q} download-report --manifest {input.manifest:q} --out {output:q}"
        " {input.verified:q}"
