# Mechanism stage (featlearn.mechanism_detection): alignment, disalignment, rescaling and
# kernel runs of every experiment. Its figures come from the figure table (figures.smk).


rule mechanisms:
    input:
        OUTPUTS["trajectories"],
    output:
        OUTPUTS["mechanisms"],
    log:
        "logs/mechanisms/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/mechanisms/{{experiment}}.tsv"
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        featlearn=FEATLEARN,
        # The thresholds are a param: changing one reruns this analysis and what reads it.
        settings=as_json({key: CONFIG["mechanisms"][key] for key in ("eps_c", "eps_rho", "eps_K")}),
        code=code_version("mechanisms"),
    shell:
        "{params.featlearn} mechanisms {input} --output {output} --settings {params.settings:q} > {log} 2>&1"
