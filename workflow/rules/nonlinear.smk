# Nonlinear networks (featlearn.nonlinear): training runs on the teacher, MNIST, digits and
# (when nonlinear.cifar10_path is set) CIFAR-10, and their figures.

NONLINEAR = CONFIG["nonlinear"]
# CIFAR-10 experiments join the DAG only when the folder with its python batches is configured.
NONLINEAR_EXPERIMENTS = [
    name
    for name, spec in NONLINEAR["experiments"].items()
    if spec["dataset"]["name"] != "cifar10" or NONLINEAR["cifar10_path"]
]
NONLINEAR_FIGURES = NONLINEAR["figures"]
NONLINEAR_FILES = {name: f"results/nonlinear/{name}.nc" for name in NONLINEAR_EXPERIMENTS}
# Inputs of the multi-experiment figures: the configured experiments that are in the DAG.
NONLINEAR_FIGURE_INPUTS = {
    figure: [NONLINEAR_FILES[name] for name in NONLINEAR_FIGURES.get(figure, []) if name in NONLINEAR_FILES]
    for figure in ("accuracy", "mechanisms")
}

rule nonlinear:
    output:
        "results/nonlinear/{experiment}.nc",
    wildcard_constraints:
        experiment="|".join(NONLINEAR_EXPERIMENTS) or "^$",
    params:
        # Just this experiment (and the CIFAR-10 folder, for CIFAR-10 experiments only), handed
        # to the job on standard input: editing anything else of the config does not rerun it.
        config=lambda w: as_json(
            {
                "nonlinear": {
                    "experiments": {w.experiment: NONLINEAR["experiments"][w.experiment]},
                    "cifar10_path": (
                        NONLINEAR["cifar10_path"]
                        if NONLINEAR["experiments"][w.experiment]["dataset"]["name"] == "cifar10"
                        else None
                    ),
                }
            }
        ),
        code=code_version("featlearn.nonlinear"),
    threads: NONLINEAR["threads"]
    conda:
        "../../environment.yml"
    log:
        "logs/nonlinear/{experiment}.log",
    shell:
        "echo {params.config:q} | featlearn nonlinear - --experiment {wildcards.experiment} "
        "--output {output} --threads {threads} 2> {log}"


ALL_TARGETS.extend(NONLINEAR_FILES.values())

if NONLINEAR_FIGURES.get("zeta"):

    rule figure_nonlinear_zeta:
        input:
            "results/nonlinear/{experiment}.nc",
        output:
            png=report(
                "results/figures/nonlinear_zeta_{experiment}.png",
                caption="../report/nonlinear_zeta.rst",
                category="Nonlinear",
            ),
            pdf="results/figures/nonlinear_zeta_{experiment}.pdf",
        wildcard_constraints:
            experiment="|".join(NONLINEAR_FIGURES["zeta"]),
        params:
            code=code_version("featlearn.figures.nonlinear"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/nonlinear_zeta_{experiment}.log",
        shell:
            "featlearn figure nonlinear_zeta {input} --output {output.png} 2> {log}"

    ALL_TARGETS.extend(
        f"results/figures/nonlinear_zeta_{name}.png"
        for name in NONLINEAR_FIGURES["zeta"]
        if name in NONLINEAR_EXPERIMENTS
    )

if NONLINEAR_FIGURES.get("ntk_width") in NONLINEAR_FILES:

    rule figure_nonlinear_ntk_width:
        input:
            NONLINEAR_FILES[NONLINEAR_FIGURES["ntk_width"]],
        output:
            png=report(
                "results/figures/nonlinear_ntk_width.png",
                caption="../report/nonlinear_ntk_width.rst",
                category="Nonlinear",
            ),
            pdf="results/figures/nonlinear_ntk_width.pdf",
        params:
            code=code_version("featlearn.figures.nonlinear"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/nonlinear_ntk_width.log",
        shell:
            "featlearn figure nonlinear_ntk_width {input} --output {output.png} 2> {log}"

    ALL_TARGETS.append("results/figures/nonlinear_ntk_width.png")

if NONLINEAR_FIGURE_INPUTS["accuracy"]:

    rule figure_nonlinear_accuracy:
        input:
            NONLINEAR_FIGURE_INPUTS["accuracy"],
        output:
            png=report(
                "results/figures/nonlinear_accuracy.png",
                caption="../report/nonlinear_accuracy.rst",
                category="Nonlinear",
            ),
            pdf="results/figures/nonlinear_accuracy.pdf",
        params:
            code=code_version("featlearn.figures.nonlinear"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/nonlinear_accuracy.log",
        shell:
            "featlearn figure nonlinear_accuracy {input} --output {output.png} 2> {log}"

    ALL_TARGETS.append("results/figures/nonlinear_accuracy.png")

if NONLINEAR_FIGURE_INPUTS["mechanisms"]:

    rule figure_nonlinear_mechanisms:
        input:
            NONLINEAR_FIGURE_INPUTS["mechanisms"],
        output:
            png=report(
                "results/figures/nonlinear_mechanisms.png",
                caption="../report/nonlinear_mechanisms.rst",
                category="Nonlinear",
            ),
            pdf="results/figures/nonlinear_mechanisms.pdf",
        params:
            # The SPEC thresholds of the mechanism stage, applied per layer.
            options=as_json({key: CONFIG["mechanisms"][key] for key in ("eps_c", "eps_rho", "eps_K")}),
            code=code_version("featlearn.figures.nonlinear"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/nonlinear_mechanisms.log",
        shell:
            "featlearn figure nonlinear_mechanisms {input} --output {output.png} --options {params.options:q} 2> {log}"

    ALL_TARGETS.append("results/figures/nonlinear_mechanisms.png")
