# Simulation stage (featlearn.simulation): each experiment's resolved configuration, its grid
# simulated in chunks (temporary files, a few per core) and merged into trajectories.nc.


rule resolve_experiment:
    # The experiment's configuration as resolved (defaults filled in): a record for the reader.
    # Simulations get the same settings as a param, so re-resolving reruns nothing downstream.
    output:
        "results/{experiment}/config.yaml",
    log:
        "logs/resolve_experiment/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/resolve_experiment/{{experiment}}.tsv"
    localrule: True
    conda:
        ENV
    params:
        featlearn=FEATLEARN,
        settings=lambda w: as_json(validation.experiment_config(CONFIG, w.experiment), ordered=True),
        code=code_version("resolve"),
    shell:
        "{params.featlearn} resolve --output {output} --settings {params.settings:q} > {log} 2>&1"


rule simulate:
    output:
        temp("results/{experiment}/chunks/{chunk}-of-{chunks}.nc"),
    log:
        "logs/simulate/{experiment}/{chunk}-of-{chunks}.log",
    benchmark:
        f"{BENCHMARKS}/simulate/{{experiment}}/{{chunk}}-of-{{chunks}}.tsv"
    group:
        "simulation"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        featlearn=FEATLEARN,
        # Key order is the order of the grid's dimensions: it must survive. (Merge repeats both
        # params: these outputs are temporary.)
        settings=lambda w: as_json(validation.experiment_config(CONFIG, w.experiment), ordered=True),
        code=code_version("simulate"),
    shell:
        "{params.featlearn} simulate --output {output} --settings {params.settings:q} "
        "--chunk {wildcards.chunk} --chunks {wildcards.chunks} > {log} 2>&1"


rule merge:
    input:
        lambda w: EXPERIMENTS[w.experiment].chunk_files("results"),
    output:
        OUTPUTS["trajectories"],
    log:
        "logs/merge/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/merge/{{experiment}}.tsv"
    group:
        "simulation"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        featlearn=FEATLEARN,
        # The chunks are temporary: once merged they are gone, so a change to what the simulate
        # jobs run (their settings or code) must rerun the merge, which then needs new chunks.
        simulation=lambda w: as_json(validation.experiment_config(CONFIG, w.experiment), ordered=True),
        simulation_code=code_version("simulate"),
        code=code_version("merge"),
    shell:
        "{params.featlearn} merge {input} --output {output} > {log} 2>&1"
