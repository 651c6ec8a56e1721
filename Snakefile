# ED-SAM pipeline. Thin by design: config validation and the stage rules live
# in workflow/rules/, all logic in the edsam package (src/edsam).
#
#   snakemake --profile profiles/local                            # embedded default (demo)
#   snakemake --profile profiles/local --configfile config/config.yaml   # paper scale, one machine

from snakemake.utils import min_version

min_version("9.19")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/ldm.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/domainbed.smk"
include: "workflow/rules/rehearsal.smk"


rule all:
    input:
        targets.all_targets(PLAN),
    default_target: True
