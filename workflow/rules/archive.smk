# Archive stage (featlearn.archive): every final output of the run, the configuration as
# given and as resolved, MANIFEST.sha256, provenance.json and RO-Crate metadata in one
# .tar.gz, checked with `featlearn verify` before the rule succeeds (a failed check fails
# the rule and Snakemake removes the archive).
#
# Not part of `rule all`: request it by name after the run, and after
# `snakemake --report results/report.html` if the report should go in too:
#     snakemake archive --forcerun archive      (what `make archive` runs)
# Everything in results/ goes into the archive, the report included when it exists.

ARCHIVE = "results/featlearn-archive.tar.gz"


rule archive:
    input:
        # A function: evaluated once every rule file has added its targets.
        lambda wildcards: ALL_TARGETS,
    output:
        ARCHIVE,
    params:
        given=[str(path) for path in workflow.configfiles],
        resolved=as_json(CONFIG),
        code=code_version("featlearn.archive"),
    log:
        "logs/archive/archive.log",
    conda:
        "../../environment.yml"
    shell:
        "(echo {params.resolved:q} | featlearn archive results --output {output} "
        "--config {params.given:q} --resolved-config - "
        "&& featlearn verify {output}) > {log} 2>&1"
