# The paper's tables: `snakemake table3` runs exactly what Table 3 needs
# (trainings, augmentations, evaluations) and writes results/tables/table3.{csv,md};
# `snakemake all_tables` does all eight.


rule table:
    input:
        results=table_inputs,
        paper=PAPER_VALUES,
    output:
        csv=f"{RESULTS}/tables/table{{table}}.csv",
        md=f"{RESULTS}/tables/table{{table}}.md",
    params:
        mapping=lambda wildcards: json.dumps(
            {**config["report"], "augment": {k: config["augment"][k] for k in ("rho", "m")}, "results_dir": RESULTS}
        ),
    log:
        f"{LOGS}/tables/table{{table}}.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam table --table {wildcards.table} --paper {input.paper:q} --mapping {params.mapping:q}"
        " --csv {output.csv:q} --md {output.md:q} > {log:q} 2>&1"


for number in range(1, 9):

    rule:
        name:
            f"table{number}"
        input:
            f"{RESULTS}/tables/table{number}.md",
        localrule: True


rule all_tables:
    input:
        expand(f"{RESULTS}/tables/table{{table}}.md", table=range(1, 9)),
    localrule: True
