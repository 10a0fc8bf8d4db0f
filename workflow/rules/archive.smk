# Archive stage (featlearn.archive): every final output of the run, the configuration as
# given and as resolved, MANIFEST.sha256, provenance.json (read from the jobs' benchmark
# files) and RO-Crate metadata in one .tar.gz, checked with `featlearn verify` before the
# rule succeeds (a failed check fails the rule and Snakemake removes the archive).
#
# Not part of `rule all`: request it by name after the run, and after
# `snakemake --report results/report.html` if the report should go in too:
#     snakemake archive --forcerun archive      (what `make archive` runs)
# Everything in results/ goes into the archive, the report included when it exists.


rule archive:
    input:
        get_final_output(),
    output:
        "results/featlearn-archive.tar.gz",
    log:
        "logs/archive/archive.log",
    localrule: True
    conda:
        ENV
    params:
        featlearn=FEATLEARN,
        settings=as_json(
            {
                "configfiles": [str(path) for path in workflow.configfiles],
                "config": CONFIG,
                "benchmarks": BENCHMARKS,
                "snakemake": ".snakemake",
            }
        ),
        code=code_version("archive"),
    shell:
        "({params.featlearn} archive results --output {output} --settings {params.settings:q} "
        "&& {params.featlearn} verify {output}) > {log} 2>&1"
