# Phase stage (featlearn.phase_diagram): classify each listed experiment from its width sweeps
# and compare with the analytical predictor (docs/phases.md); the same for every nonlinear phase
# plane (docs/nonlinear.md). Figures: figures.smk.


rule phases:
    input:
        OUTPUTS["trajectories"],
    output:
        OUTPUTS["phases"],
    log:
        "logs/phases/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/phases/{{experiment}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        featlearn=FEATLEARN,
        settings=phase_settings(CONFIG["phases"]["strict"], CONFIG["phases"]["min_agreement"]),
        code=code_version("phases"),
    shell:
        "{params.featlearn} phases {input} --output {output} --settings {params.settings:q} > {log} 2>&1"


# The same classifier on a plane's runs, checked against the plane's own min_agreement (null: never).
rule plane_phases:
    input:
        OUTPUTS["plane"],
    output:
        OUTPUTS["plane_phases"],
    log:
        "logs/plane_phases/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/plane_phases/{{experiment}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        featlearn=FEATLEARN,
        settings=lambda w: plane_phase_settings(NONLINEAR["planes"][w.experiment]["min_agreement"]),
        code=code_version("phases"),
    shell:
        "{params.featlearn} phases {input} --output {output} --settings {params.settings:q} > {log} 2>&1"
