# The paper's tables: `snakemake table3` runs exactly what Table 3 needs
# (trainings, augmentations, evaluations) and writes results/tables/table3.{csv,md};
# `snakemake all_tables` does all eight.


rule table:
    input:
        results=table_inputs,
        paper=PAPER_VALUES,
    output:
        csv=report(f"{RESULTS}/tables/table{{table}}.csv", caption="../report/table.rst", category="Tables"),
        md=f"{RESULTS}/tables/table{{table}}.md",
    params:
        mapping=lambda wildcards: json.dumps(
            {**config["report"], "augment": {k: config["augment"][k] for k in ("rho", "m")},
             "evaluate": config["evaluate"], "results_dir": RESULTS}
        ),
    log:
        f"{LOGS}/tables/table{{table}}.log",
    resources:
        **stage_resources("light"),
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
        table_targets(),
    localrule: True


rule plot_versus:
    input:
        f"{RESULTS}/tables/table{{table}}.csv",
    output:
        report(
            f"{RESULTS}/plots/table{{table}}_accuracy.png",
            caption="../report/plot_versus.rst",
            category="Figures",
        ),
    wildcard_constraints:
        table="[12]",
    params:
        knob=lambda wildcards: {"1": "rho", "2": "m"}[wildcards.table],
    log:
        f"{LOGS}/plots/table{{table}}.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam plot-versus --table-csv {input:q} --knob {params.knob} --out {output:q} > {log:q} 2>&1"


rule plot_domains:
    input:
        zeroshot_domain_results,
    output:
        report(f"{RESULTS}/plots/zeroshot_domains.png", caption="../report/plot_domains.rst", category="Figures"),
    log:
        f"{LOGS}/plots/zeroshot_domains.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam plot-domains --out {output:q} {input:q} > {log:q} 2>&1"


rule readme_results:
    """The README's results section; copy it into README.md with `edsam readme-sync` (see README)."""
    input:
        tables=expand(f"{RESULTS}/tables/table{{table}}.csv", table=range(1, 9)),
        figures=readme_figures,
        markdown=dg_targets(),
    output:
        f"{RESULTS}/readme/results.md",
    params:
        title=config["report"]["title"],
    log:
        f"{LOGS}/readme_results.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam readme-results --title {params.title:q} --out {output:q} --tables {input.tables:q}"
        " --figures {input.figures:q} --markdown {input.markdown:q} > {log:q} 2>&1"
