# Phase stage (featlearn.phases): classify each listed experiment from its width sweeps, compare
# with the analytical predictor (phases.nc), and draw the phase figures (docs/phases.md).

PHASES = CONFIG["phases"]
PHASE_FIT = PHASES["fit"]
# Fit settings as CLI options; with strict, the job fails when the agreement is below min_agreement.
PHASE_OPTIONS = (
    f"--tolerance {PHASE_FIT['tolerance']} --resolution {PHASE_FIT['resolution']} "
    f"--bootstrap {PHASE_FIT['bootstrap']} --divergence-fraction {PHASE_FIT['divergence_fraction']} "
    f"--min-widths {PHASE_FIT['min_widths']} --gd-rise {PHASES['gd_rise']}"
    + (f" --min-agreement {PHASES['min_agreement']}" if PHASES["strict"] else "")
)


rule phases:
    input:
        "results/{experiment}/trajectories.nc",
    output:
        "results/{experiment}/phases.nc",
    params:
        options=PHASE_OPTIONS,
        code=code_version("featlearn.phases"),
    conda:
        "../../environment.yml"
    log:
        "logs/phases/{experiment}.log",
    shell:
        "featlearn phases {input} --output {output} {params.options} 2> {log}"


ALL_TARGETS.extend(f"results/{name}/phases.nc" for name in PHASES["experiments"])


# What each phase figure reads from its experiment's folder (the others read phases.nc only).
PHASE_FIGURE_READS = {
    "phases_kernel_change_map": ["trajectories"],
    "phases_kernel_change_width": ["trajectories", "phases"],
}


# One rule per configured figure (figure_phases_diagram_scale, ...): each reruns only when its
# inputs, its axes or the figure code change.
for figure_name, figure_spec in PHASES["figures"].items():

    rule:
        name:
            f"figure_{figure_name}"
        input:
            [
                f"results/{figure_spec['experiment']}/{stage}.nc"
                for stage in PHASE_FIGURE_READS.get(figure_name, ["phases"])
            ],
        output:
            png=report(
                f"results/figures/{figure_name}.png",
                caption=f"../report/{figure_name}.rst",
                category="Phases",
            ),
            pdf=f"results/figures/{figure_name}.pdf",
        params:
            figure=figure_name,
            options=as_json({axis: figure_spec[axis] for axis in ("x", "y") if axis in figure_spec}),
            code=code_version("featlearn.figures.phases"),
        conda:
            "../../environment.yml"
        log:
            f"logs/figures/{figure_name}.log",
        shell:
            "featlearn figure {params.figure} {input} --output {output.png} "
            "--options {params.options:q} 2> {log}"

    ALL_TARGETS.append(f"results/figures/{figure_name}.png")
