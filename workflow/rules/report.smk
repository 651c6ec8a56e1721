# The paper's tables: `snakemake table3` runs exactly what Table 3 needs
# (trainings, augmentations, evaluations) and writes results/tables/table3.{csv,md};
# `snakemake all_tables` does all eight.


rule table:
    input:
        results=lambda wildcards: targets.table_inputs(PLAN, wildcards.table),
        paper=PAPER_VALUES,
    output:
        csv=report(f"{RESULTS}/tables/table{{table}}.csv", caption="../report/table.rst", category="Tables"),
        md=f"{RESULTS}/tables/table{{table}}.md",
    params:
        mapping=as_json(job_settings.report(PLAN)),
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
        targets.table_targets(PLAN),
    localrule: True


rule headline:
    """CLIP / Random / ED-SAM over report.headline.seeds, zero-shot per held-out domain, paired differences."""
    input:
        results=HEADLINE.results() if HEADLINE else [],
        benchmark=PLAN.benchmark_marker(config["evaluate"]["primary"]) if HEADLINE else [],
    output:
        csv=report(f"{RESULTS}/tables/headline.csv", caption="../report/headline.rst", category="Tables"),
        md=f"{RESULTS}/tables/headline.md",
        figure=report(f"{RESULTS}/plots/headline.png", caption="../report/headline.rst", category="Figures"),
    params:
        settings=as_json(job_settings.report(PLAN)),
        classnames=f"{PLAN.benchmark_root(config['evaluate']['primary'])}/classnames.txt" if HEADLINE else "",
    log:
        f"{LOGS}/tables/headline.log",
    resources:
        **stage_resources("light"),
    conda:
        "../../envs/train.yaml"
    shell:
        "python -m edsam headline --settings {params.settings:q} --classnames {params.classnames:q}"
        " --csv {output.csv:q} --md {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


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
        targets.zeroshot_domain_results(PLAN),
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
        figures=targets.readme_figures(PLAN),
        headline=[f for f in targets.headline_targets(PLAN) if f.endswith(".md")],
        markdown=targets.dg_targets(PLAN),
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
        " --figures {input.figures:q} --headline {input.headline:q} --markdown {input.markdown:q} > {log:q} 2>&1"
