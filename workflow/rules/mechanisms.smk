# Mechanism stage (featlearn.mechanisms): alignment, disalignment, rescaling and kernel runs
# of every experiment, and the mechanism figures (maps, trajectories, width scaling).

MECHANISMS = CONFIG["mechanisms"]
# Every experiment of the configuration gets a mechanism analysis (the list is not hard-coded).
MECHANISMS_FILES = {name: f"results/{name}/mechanisms.nc" for name in CONFIG["experiments"]}

rule mechanisms:
    input:
        "results/{experiment}/trajectories.nc",
    output:
        "results/{experiment}/mechanisms.nc",
    params:
        # Thresholds are params, so changing one reruns only this analysis and what reads it.
        eps_c=MECHANISMS["eps_c"],
        eps_rho=MECHANISMS["eps_rho"],
        eps_K=MECHANISMS["eps_K"],
        code=code_version("featlearn.mechanisms"),
    conda:
        "../../environment.yml"
    log:
        "logs/mechanisms/{experiment}.log",
    shell:
        "featlearn mechanisms {input} --output {output} --eps-c {params.eps_c} "
        "--eps-rho {params.eps_rho} --eps-K {params.eps_K} 2> {log}"


ALL_TARGETS.extend(MECHANISMS_FILES.values())

if MECHANISMS["maps"]:
    MECHANISM_MAPS = MECHANISMS["maps"]

    rule figure_mechanism_map:
        input:
            lambda w: MECHANISMS_FILES[MECHANISM_MAPS[w.map]["experiment"]],
        output:
            png=report(
                "results/figures/mechanism_map_{map}.png",
                caption="../report/mechanisms_map.rst",
                category="Mechanisms",
            ),
            pdf="results/figures/mechanism_map_{map}.pdf",
        wildcard_constraints:
            map="|".join(MECHANISM_MAPS),
        params:
            options=lambda w: as_json({k: v for k, v in MECHANISM_MAPS[w.map].items() if k != "experiment"}),
            code=code_version("featlearn.figures.mechanisms"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/mechanism_map_{map}.log",
        shell:
            "featlearn figure mechanism_map {input} --output {output.png} --options {params.options:q} 2> {log}"

    ALL_TARGETS.extend(f"results/figures/mechanism_map_{name}.png" for name in MECHANISM_MAPS)

if "trajectories" in MECHANISMS:
    MECHANISM_PANELS = MECHANISMS["trajectories"]["panels"]

    rule figure_mechanism_trajectories:
        input:
            sorted({MECHANISMS_FILES[panel["experiment"]] for panel in MECHANISM_PANELS.values()}),
        output:
            png=report(
                "results/figures/mechanism_trajectories.png",
                caption="../report/mechanisms_trajectories.rst",
                category="Mechanisms",
            ),
            pdf="results/figures/mechanism_trajectories.pdf",
        params:
            options=as_json({"panels": MECHANISM_PANELS}),
            code=code_version("featlearn.figures.mechanisms"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/mechanism_trajectories.log",
        shell:
            "featlearn figure mechanism_trajectories {input} --output {output.png} "
            "--options {params.options:q} 2> {log}"

    ALL_TARGETS.append("results/figures/mechanism_trajectories.png")

if "width_scaling" in MECHANISMS:
    MECHANISM_WIDTH_SCALING = MECHANISMS["width_scaling"]

    rule figure_mechanism_width_scaling:
        input:
            MECHANISMS_FILES[MECHANISM_WIDTH_SCALING["experiment"]],
        output:
            png=report(
                "results/figures/mechanism_width_scaling.png",
                caption="../report/mechanisms_width_scaling.rst",
                category="Mechanisms",
            ),
            pdf="results/figures/mechanism_width_scaling.pdf",
        params:
            options=as_json({k: v for k, v in MECHANISM_WIDTH_SCALING.items() if k != "experiment"}),
            code=code_version("featlearn.figures.mechanisms"),
        conda:
            "../../environment.yml"
        log:
            "logs/figures/mechanism_width_scaling.log",
        shell:
            "featlearn figure mechanism_width_scaling {input} --output {output.png} "
            "--options {params.options:q} 2> {log}"

    ALL_TARGETS.append("results/figures/mechanism_width_scaling.png")
