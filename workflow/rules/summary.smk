# The report's front page (featlearn.summary): what the run found, read from every analysis
# output and put in place of the marker line of the report's static page. The Snakefile's
# report directive opens the report on it once it exists.


rule summary:
    input:
        # Relative to the working directory, so that moving the project reruns nothing.
        template=os.path.relpath(Path(workflow.basedir) / "report" / "workflow.rst"),
        datasets=[output_of("mechanisms", name) for name in EXPERIMENTS]
        + [output_of("phases", name) for name in PHASE_EXPERIMENTS]
        + [output_of("nonlinear", name) for name in NONLINEAR_EXPERIMENTS]
        + [output_of("plane_phases", name) for name in NONLINEAR_PLANES],
    output:
        SUMMARY,
    log:
        "logs/summary/summary.log",
    benchmark:
        f"{BENCHMARKS}/summary/summary.tsv"
    localrule: True
    conda:
        ENV
    params:
        featlearn=FEATLEARN,
        # Which figures exist and what they draw (not their options): editing a figure's
        # settings reruns that figure only.
        settings=as_json(
            {
                "figures": [
                    {"stem": job.stem, "figure": job.figure, "experiments": sorted({e for _, e in job.inputs})}
                    for job in FIGURE_JOBS
                ]
            }
        ),
        code=code_version("summary"),
    shell:
        "{params.featlearn} summary {input.template} {input.datasets} --output {output} "
        "--settings {params.settings:q} > {log} 2>&1"
