# The embedded demo corpus (datasets with source: corpus).


rule corpus:
    output:
        marker=f"{RESULTS}/corpus/corpus.json",
        urls=f"{RESULTS}/corpus/urls.parquet",
        metadata=f"{RESULTS}/corpus/metadata.parquet",
    params:
        settings=lambda wildcards: as_json(config["corpus"]),
        out=lambda wildcards, output: os.path.dirname(output.marker),
    log:
        f"{LOGS}/corpus.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/download.yaml"
    shell:
        "python -m edsam corpus --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"
