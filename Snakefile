# featlearn: from a hyperparameter grid to every dataset, analysis and figure.
#
#   snakemake --cores 2                                # default experiments (config/config.yaml)
#   snakemake --configfile config/smoke.yaml --cores 2 # tiny version of everything
#
# The configuration is validated against workflow/schemas/config.schema.yaml
# before any job runs. Rules are split by stage under workflow/rules/.

from snakemake.utils import min_version

min_version("9.0")


# Jobs find the featlearn command through PATH (see workflow/rules/common.smk).
envvars:
    "PATH",


# --configfile replaces the default configuration instead of being merged into it,
# so a smaller configuration really runs only its own experiments.
if not config:

    configfile: "config/config.yaml"


# The report (`snakemake --report results/report.html`): this description with the
# configuration, then every figure with its caption.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/phases.smk"
include: "workflow/rules/mechanisms.smk"
include: "workflow/rules/nonlinear.smk"
include: "workflow/rules/archive.smk"


rule all:
    default_target: True
    input:
        ALL_TARGETS,
