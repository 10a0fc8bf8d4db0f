# Nonlinear networks (featlearn.nonlinear): training runs on the teacher, MNIST, digits and
# (when nonlinear.cifar10_path is set) CIFAR-10, and the runs of the nonlinear phase planes
# (classified in phases.smk). Figures: figures.smk.


rule train:
    output:
        OUTPUTS["nonlinear"],
    log:
        "logs/train/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/train/{{experiment}}.tsv"
    conda:
        TORCH_ENV
    threads: NONLINEAR["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        featlearn=FEATLEARN,
        # Just this experiment (and the CIFAR-10 folder, for CIFAR-10 experiments only):
        # editing anything else of the configuration does not rerun it.
        settings=lambda w: as_json(
            {
                "name": w.experiment,
                "experiment": NONLINEAR["experiments"][w.experiment],
                "cifar10_path": (
                    NONLINEAR["cifar10_path"]
                    if NONLINEAR["experiments"][w.experiment]["dataset"]["name"] == "cifar10"
                    else None
                ),
            }
        ),
        code=code_version("train"),
    shell:
        "{params.featlearn} train --output {output} --settings {params.settings:q} --threads {threads} > {log} 2>&1"


rule train_plane:
    output:
        OUTPUTS["plane"],
    log:
        "logs/train_plane/{experiment}.log",
    benchmark:
        f"{BENCHMARKS}/train_plane/{{experiment}}.tsv"
    conda:
        TORCH_ENV
    threads: NONLINEAR["threads"]
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        featlearn=FEATLEARN,
        # Just this plane (and the CIFAR-10 folder, for CIFAR-10 planes only).
        settings=lambda w: as_json(
            {
                "name": w.experiment,
                "plane": NONLINEAR["planes"][w.experiment],
                "cifar10_path": (
                    NONLINEAR["cifar10_path"]
                    if NONLINEAR["planes"][w.experiment]["dataset"]["name"] == "cifar10"
                    else None
                ),
            }
        ),
        code=code_version("train-plane"),
    shell:
        "{params.featlearn} train-plane --output {output} --settings {params.settings:q} --threads {threads} > {log} 2>&1"
