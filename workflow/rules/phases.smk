# Phase stage (featlearn.phase_diagram): classify each listed experiment from its width sweeps
# and compare with the analytical predictor (docs/phases.md). Figures: figures.smk.


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
        # With strict, the job fails (after writing) when the agreement is below min_agreement.
        settings=as_json({key: CONFIG["phases"][key] for key in ("fit", "gd_rise", "strict", "min_agreement")}),
        code=code_version("phases"),
    shell:
        "{params.featlearn} phases {input} --output {output} --settings {params.settings:q} > {log} 2>&1"
