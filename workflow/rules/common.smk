# Shared by all rule files. The validated configuration, where each stage writes, how jobs
# call featlearn, and the final targets (get_final_output, as in snakemake-workflows).

import os
import re
import shlex
import sys
from pathlib import Path

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from featlearn import io, validation
from featlearn.dag import as_json, code_version
from featlearn.errors import UserError
from featlearn.figures import table as figure_table
from featlearn.grid import Experiment

# A bad configuration is refused here, before any job is scheduled, naming every bad field:
# one message and exit status 1, no traceback (sys.exit).
if not workflow.configfiles:
    sys.exit(
        "featlearn: no configuration. Snakemake takes config/config.yaml from the workflow profile "
        "(workflow/profiles/default); give one with --configfile FILE."
    )
try:
    # Snakemake read the files already, keeping the last of a key given twice: read again to refuse that.
    for path in workflow.configfiles:
        validation.read_file(str(path))
    CONFIG = validation.validate(config)
except UserError as error:
    sys.exit(f"featlearn: {error}")

# Crash recovery. Snakemake locks the files of a run in .snakemake/locks and unlocks them when
# the run ends; a run that is killed (kill -9, the OOM killer, power loss, a lost node) leaves
# the locks, and Snakemake refuses every later run until `--unlock`, as it cannot tell them from
# a live run's. This lock can: the main Snakemake process of every run of this workflow holds it
# while it lives (flock: released by the kernel however the process ends). Whoever gets it is
# the only run alive here, so locks in .snakemake/locks are stale: they are removed, and the
# interrupted jobs rerun (rerun-incomplete, set in the profiles). A run started while another
# is alive does not get it and leaves the locks alone: Snakemake refuses it as before.
RUN_LOCK_FILE = Path(".snakemake/featlearn-run.lock")
if workflow.is_main_process:
    RUN_LOCK = io.hold_lock(RUN_LOCK_FILE)
    if RUN_LOCK is None:
        print(
            f"featlearn: another Snakemake run is active in this folder ({io.lock_holder(RUN_LOCK_FILE)}); "
            "a run writing the same files is refused until it ends (do not --unlock it).",
            file=sys.stderr,
        )
    else:
        STALE_LOCKS = sorted(Path(".snakemake/locks").glob("*.lock"))
        for lock in STALE_LOCKS:
            lock.unlink()
        if STALE_LOCKS:
            print(
                "featlearn: the last run in this folder ended without unlocking it (killed, out of memory, "
                "power loss); removed its stale locks: its interrupted jobs run again.",
                file=sys.stderr,
            )


def featlearn_command():
    """How jobs call featlearn: with the interpreter running Snakemake (its environment has
    featlearn installed), named relative to the workflow folder when it lies inside it, so
    moving the project folder changes no rule's params; with --use-conda, with the python of
    the rule's own conda environment."""
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python -m featlearn"
    interpreter = Path(sys.executable).absolute()
    if interpreter.is_relative_to(Path.cwd()):
        interpreter = interpreter.relative_to(Path.cwd())
    return f"{shlex.quote(str(interpreter))} -m featlearn"


FEATLEARN = featlearn_command()

# Conda environments: the linear stages need no torch, the nonlinear training does.
ENV = "../envs/featlearn.yaml"
TORCH_ENV = "../envs/nonlinear.yaml"

# Every job times itself (the benchmark: directive); the archive's provenance reads these files.
BENCHMARKS = "logs/benchmarks"

# Where each stage writes its output for an experiment; the figure table names its inputs by kind.
OUTPUTS = {
    "trajectories": "results/{experiment}/trajectories.nc",
    "mechanisms": "results/{experiment}/mechanisms.nc",
    "phases": "results/{experiment}/phases.nc",
    "nonlinear": "results/nonlinear/{experiment}.nc",
    # A nonlinear phase plane's runs and its phases (a phases file, kind phases), named as validation
    # checks them against the nonlinear experiments' files.
    "plane": f"results/nonlinear/{{experiment}}{validation.PLANE_FILES['plane']}.nc",
    "plane_phases": f"results/nonlinear/{{experiment}}{validation.PLANE_FILES['plane_phases']}.nc",
}


def output_of(kind, experiment):
    return OUTPUTS[kind].format(experiment=experiment)


EXPERIMENTS = {name: Experiment.from_config(CONFIG, name) for name in CONFIG["experiments"]}
PHASE_EXPERIMENTS = CONFIG["phases"]["experiments"]
NONLINEAR = CONFIG["nonlinear"]
# CIFAR-10 experiments join the DAG only when the folder with its python batches is configured.
NONLINEAR_EXPERIMENTS = [
    name
    for name, spec in NONLINEAR["experiments"].items()
    if spec["dataset"]["name"] != "cifar10" or NONLINEAR["cifar10_path"]
]
NONLINEAR_PLANES = [
    name
    for name, spec in NONLINEAR["planes"].items()
    if spec["dataset"]["name"] != "cifar10" or NONLINEAR["cifar10_path"]
]
# The figures the configuration asks for, drawn from the outputs this run produces.
AVAILABLE = {
    *((kind, name) for name in EXPERIMENTS for kind in ("trajectories", "mechanisms")),
    *(("phases", name) for name in PHASE_EXPERIMENTS),
    *(("nonlinear", name) for name in NONLINEAR_EXPERIMENTS),
    *(("plane_phases", name) for name in NONLINEAR_PLANES),
}
FIGURE_JOBS = figure_table.figure_jobs(CONFIG, AVAILABLE)

# Experiment names are validated identifiers; escaped anyway, they are joined into a regex.
# (Validation keeps a plane's files from being a nonlinear experiment's.)
EXPERIMENT_PATTERN = "|".join(map(re.escape, [*EXPERIMENTS, *NONLINEAR_EXPERIMENTS, *NONLINEAR_PLANES])) or "^$"


# Settings of the phases jobs (rules/phases.smk): linear experiments and nonlinear planes.
def phase_settings(strict, min_agreement):
    """The phases job's settings: the phases section's fit and GD settings, and the agreement check.

    With strict, the job fails (after writing) when the agreement is below min_agreement.
    """
    settings = {key: CONFIG["phases"][key] for key in ("fit", "gd_rise")}
    return as_json({**settings, "strict": strict, "min_agreement": min_agreement})


def plane_phase_settings(min_agreement):
    """A plane's: the same, strict when the plane sets a min_agreement."""
    if min_agreement is None:
        return phase_settings(False, CONFIG["phases"]["min_agreement"])
    return phase_settings(True, min_agreement)


# The report's front page: what the run found (rules/summary.smk).
SUMMARY = "results/summary.rst"


def get_final_output():
    """Every final output of the run: datasets of every stage, every figure and the summary."""
    targets = [f"results/{name}/config.yaml" for name in EXPERIMENTS]
    targets += [output_of(kind, name) for name in EXPERIMENTS for kind in ("trajectories", "mechanisms")]
    targets += [output_of("phases", name) for name in PHASE_EXPERIMENTS]
    targets += [output_of("nonlinear", name) for name in NONLINEAR_EXPERIMENTS]
    targets += [output_of(kind, name) for name in NONLINEAR_PLANES for kind in ("plane", "plane_phases")]
    targets += [f"results/figures/{job.stem}.{suffix}" for job in FIGURE_JOBS for suffix in ("png", "pdf")]
    targets.append(SUMMARY)
    return targets
