# Figures: one rule per figure the configuration asks for, generated from the figure table
# (featlearn.figures.table; the pattern of showyourwork's figure.smk). Each rule reruns only
# when its inputs, its options or its figure's code change. Figures are tiny local jobs.

for job in FIGURE_JOBS:
    entry = figure_table.entry(job.figure)

    rule:
        name:
            f"figure_{job.stem}"
        input:
            [output_of(kind, experiment) for kind, experiment in job.inputs],
        output:
            png=report(
                f"results/figures/{job.stem}.png",
                caption=f"../report/{entry.caption}",
                category=entry.category,
            ),
            pdf=f"results/figures/{job.stem}.pdf",
        log:
            f"logs/figures/{job.stem}.log",
        benchmark:
            f"{BENCHMARKS}/figure/{job.stem}.tsv"
        localrule: True
        conda:
            ENV
        params:
            featlearn=FEATLEARN,
            figure=job.figure,
            stem=job.stem,
            settings=as_json(job.options),
            code=code_version("figure", f"featlearn.figures.{entry.module}"),
        shell:
            "{params.featlearn} figure {params.figure} {input} --output {output.png} "
            "--settings {params.settings:q} > {log} 2>&1"
