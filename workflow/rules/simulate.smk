# Simulation stage (featlearn.config, featlearn.simulate): resolve -> simulate chunks -> merge,
# and the first figure, exact flow vs GD vs explicit.

import json

EXPERIMENTS = {name: featlearn_config.Experiment.from_config(CONFIG, name) for name in CONFIG["experiments"]}


wildcard_constraints:
    experiment="|".join(EXPERIMENTS) or "^$",
    chunk=r"\d+",
    chunks=r"\d+",


rule resolve_experiment:
    # Writes the experiment's resolved configuration; reruns only when that experiment's
    # section changes, so editing one experiment reruns only its chain.
    output:
        "results/{experiment}/config.yaml",
    params:
        # Not as_json: key order is the order of the grid's dimensions, so it must survive.
        resolved=lambda w: json.dumps(featlearn_config.experiment_config(CONFIG, w.experiment)),
        code=code_version("featlearn.config"),
    conda:
        "../../environment.yml"
    log:
        "logs/resolve_experiment/{experiment}.log",
    shell:
        "echo {params.resolved:q} | featlearn validate - --experiment {wildcards.experiment} "
        "--output {output} 2> {log}"


rule simulate:
    input:
        "results/{experiment}/config.yaml",
    output:
        "results/{experiment}/chunks/{chunk}-of-{chunks}.nc",
    params:
        code=code_version("featlearn.simulate"),
    conda:
        "../../environment.yml"
    log:
        "logs/simulate/{experiment}/{chunk}-of-{chunks}.log",
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "featlearn simulate {input} --experiment {wildcards.experiment} "
        "--chunk {wildcards.chunk} --chunks {wildcards.chunks} --output {output} 2> {log}"


rule merge:
    input:
        lambda w: EXPERIMENTS[w.experiment].chunk_files("results"),
    output:
        "results/{experiment}/trajectories.nc",
    params:
        code=code_version("featlearn.simulate"),
    conda:
        "../../environment.yml"
    log:
        "logs/merge/{experiment}.log",
    shell:
        "featlearn merge {input} --output {output} 2> {log}"


ALL_TARGETS.extend(f"results/{name}/trajectories.nc" for name in EXPERIMENTS)

if "solver_comparison" in CONFIG["figures"]:
    SOLVER_COMPARISON = CONFIG["figures"]["solver_comparison"]

    rule figure_solver_comparison:
        input:
            [f"results/{name}/trajectories.nc" for name in SOLVER_COMPARISON["experiments"]],
        output:
            png=report(
                "results/figures/solver_comparison.png",
                caption="../report/solver_comparison.rst",
                category="Simulation",
            ),
            pdf="results/figures/solver_comparison.pdf",
        params:
            options=as_json({"seed": SOLVER_COMPARISON["seed"]}),
            code=code_version("featlearn.figures.simulation"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/solver_comparison.log",
        shell:
            "featlearn figure solver_comparison {input} --output {output.png} "
            "--options {params.options:q} 2> {log}"

    ALL_TARGETS.append("results/figures/solver_comparison.png")
