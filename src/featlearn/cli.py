"""Command line: ``featlearn <stage> ...``. Thin: parse, read, call the stage, write.

Each subcommand is a stage of the pipeline (the Snakemake rules call them)
and runs on its own too. Errors a user can fix (a bad configuration, a
missing file) are printed as one message with exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from featlearn import __version__
from featlearn import config as cfg
from featlearn import io

Handler = Callable[[argparse.Namespace], int]


def _validate(args: argparse.Namespace) -> int:
    config = cfg.load(args.config)
    if args.experiment:
        resolved = cfg.experiment_config(config, args.experiment)
        experiment = cfg.Experiment.from_config(resolved, args.experiment)
        if args.output:
            io.write_yaml(resolved, args.output)
        print(
            f"{args.experiment}: {experiment.grid.size} grid points x {experiment.seeds} seeds, "
            f"solver {experiment.solver}, {experiment.n_chunks} chunks",
            file=sys.stderr,
        )
    else:
        if args.output:
            io.write_yaml(config, args.output)
        print(f"{args.config}: valid, experiments {', '.join(config['experiments'])}", file=sys.stderr)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from featlearn import simulate

    config = cfg.experiment_config(cfg.load(args.config), args.experiment)
    experiment = cfg.Experiment.from_config(config, args.experiment)
    chunks = args.chunks if args.chunks is not None else 1
    ds = simulate.simulate_chunk(experiment, args.chunk, chunks, config=config)
    io.write_netcdf(ds, args.output)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from featlearn import simulate

    # Lazy: the chunks stream onto the grid block by block as the result is written.
    merged = simulate.merge_chunks([io.read_netcdf(path, lazy=True) for path in args.parts])
    io.write_netcdf(merged, args.output)
    print(f"merged {len(args.parts)} chunks into {args.output}", file=sys.stderr)
    return 0


def _mechanisms(args: argparse.Namespace) -> int:
    from featlearn import mechanisms

    # Lazy: the grid streams through in blocks of runs, so it may be larger than memory.
    trajectories = io.read_netcdf(args.trajectories, lazy=True)
    detected = mechanisms.detect(trajectories, mechanisms.Thresholds(args.eps_c, args.eps_rho, args.eps_K))
    experiment = trajectories.attrs.get("experiment", "")
    # The thresholds are stored as attributes; the configuration hash is the runs' own.
    detected.attrs.update(io.derived_attrs(f"featlearn mechanisms: {experiment}", trajectories))
    io.write_netcdf(detected, args.output)
    counts = ", ".join(
        f"{label} {int((detected['primary'] == code).sum())}" for code, label in enumerate(mechanisms.PRIMARY_LABELS)
    )
    print(f"{experiment}: primary labels: {counts}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from featlearn import phases

    predicted = phases.prediction(args.a, args.b_u, args.b_w, args.c_u, args.c_w, args.rho)
    if args.json:
        print(json.dumps(predicted))
    else:
        exps = ", ".join(f"{name} = {predicted[name]:g}" for name in ("e0", "eM", "eF", "elam"))
        print(f"{predicted['phase']} ({exps})")
    return 0


def _phases(args: argparse.Namespace) -> int:
    from featlearn import phases

    # Lazy: the per-run measurements stream through in blocks of runs.
    trajectories = io.read_netcdf(args.trajectories, lazy=True)
    settings = phases.FitSettings(args.tolerance, args.resolution, args.bootstrap, args.divergence_fraction)
    result = phases.analyse(trajectories, settings, min_widths=args.min_widths, gd_rise=args.gd_rise)
    experiment = trajectories.attrs.get("experiment", "")
    # The fit settings are stored as attributes; the configuration hash is the runs' own.
    result.attrs.update(io.derived_attrs(f"featlearn phases: {experiment}", trajectories))
    io.write_netcdf(result, args.output)
    if "agreement" in result.attrs:
        agreement = result.attrs["agreement"]
        print(f"{experiment}: agreement {agreement:.3f} over {result.attrs['cells']} cells", file=sys.stderr)
        print(f"{experiment}: disagreeing cells: {result.attrs['disagreeing_cells']}", file=sys.stderr)
        if args.min_agreement is not None and agreement < args.min_agreement:
            raise ValueError(f"{experiment}: agreement {agreement:.3f} is below --min-agreement {args.min_agreement}")
    return 0


def _nonlinear(args: argparse.Namespace) -> int:
    import torch

    from featlearn.nonlinear.train import run_experiment

    section = cfg.load(args.config)["nonlinear"]
    if args.experiment not in section["experiments"]:
        known = ", ".join(section["experiments"]) or "none"
        raise cfg.ConfigError([f"nonlinear.experiments.{args.experiment}: no such experiment (known: {known})"])
    spec = section["experiments"][args.experiment]
    torch.set_num_threads(args.threads or section["threads"])
    ds = run_experiment(
        spec, cifar10_path=section["cifar10_path"], progress=lambda message: print(message, file=sys.stderr)
    )
    # The runs depend on their experiment's spec (and the CIFAR-10 folder), nothing else of the config.
    provenance = {"experiment": spec, "cifar10_path": section["cifar10_path"]}
    ds.attrs.update(io.provenance_attrs(f"featlearn nonlinear: {args.experiment}", "torch-gd", provenance))
    ds.attrs["experiment"] = args.experiment
    io.write_netcdf(ds, args.output)
    return 0


def _figure(args: argparse.Namespace) -> int:
    from featlearn import figures

    options = json.loads(args.options) if args.options else {}
    figure = figures.draw(args.name, [io.read_netcdf(path) for path in args.inputs], **options)
    io.save_figure(figure, args.output)
    return 0


def _archive(args: argparse.Namespace) -> int:
    from featlearn import archive

    resolved = None
    if args.resolved_config:
        # JSON, not YAML: the workflow passes canonical JSON, and YAML reads 1e-12 as a string.
        if args.resolved_config == "-":
            resolved = json.load(sys.stdin)
        else:
            with open(args.resolved_config) as handle:
                resolved = json.load(handle)
    names = archive.create_archive(
        args.results,
        args.output,
        given_configs=args.config,
        resolved_config=resolved,
        snakemake_dir=args.snakemake_dir,
    )
    print(f"archived {len(names)} files of {args.results} into {args.output}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from featlearn import archive

    result = archive.verify_archive(args.archive)
    for problem in result.problems:
        print(f"featlearn verify: {args.archive}: {problem}", file=sys.stderr)
    if not result.ok:
        return 1
    print(f"{args.archive}: {result.files} files verified against {archive.MANIFEST}")
    return 0


def _phase_defaults():
    """Default fit settings of ``featlearn phases`` (imported lazily: the parser stays light)."""
    from featlearn.phases import FitSettings

    return FitSettings()


def build_parser() -> argparse.ArgumentParser:
    """The ``featlearn`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="featlearn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"featlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("validate", _validate, "check a configuration against the schema; optionally write it resolved")
    sub.add_argument("config", help="configuration YAML or JSON ('-' reads standard input)")
    sub.add_argument("--experiment", help="resolve only this experiment")
    sub.add_argument("--output", help="write the resolved configuration here (YAML)")

    sub = command("simulate", _simulate, "simulate one chunk of an experiment's grid")
    sub.add_argument("config", help="configuration YAML")
    sub.add_argument("--experiment", required=True)
    sub.add_argument("--chunk", type=int, default=0, help="chunk index, 0-based (default 0)")
    sub.add_argument("--chunks", type=int, help="number of chunks (default 1)")
    sub.add_argument("--output", required=True, help="netCDF file to write")

    sub = command("merge", _merge, "merge simulation chunks into the experiment's grid")
    sub.add_argument("parts", nargs="+", help="chunk netCDF files")
    sub.add_argument("--output", required=True)

    sub = command("mechanisms", _mechanisms, "detect alignment, disalignment, rescaling and kernel runs")
    sub.add_argument("trajectories", help="trajectories netCDF of one experiment")
    sub.add_argument("--output", required=True, help="mechanisms netCDF file to write")
    for option, what in (("--eps-c", "|delta_c|"), ("--eps-rho", "max(|rho_u|, |rho_w|)"), ("--eps-K", "|kernel_change|")):
        sub.add_argument(option, type=float, default=0.1, help=f"flag threshold on {what} (default 0.1)")

    sub = command("predict", _predict, "predict the phase of width exponents (a, b_u, b_w, c_u, c_w)")
    for option, what in (("--a", "kappa"), ("--b-u", "sigma_u"), ("--b-w", "sigma_w"), ("--c-u", "eta_u"), ("--c-w", "eta_w")):
        sub.add_argument(option, type=float, required=True, help=f"width exponent of {what} (value ~ d^-exponent)")
    sub.add_argument("--rho", type=float, default=0.0, help="initial correlation of u and w (nonzero: coherent output)")
    sub.add_argument("--json", action="store_true", help="print one JSON object: phase, e0, eM, eF, elam")

    sub = command("phases", _phases, "classify the phases of an experiment from its width sweeps")
    sub.add_argument("trajectories", help="trajectories netCDF of one experiment")
    sub.add_argument("--output", required=True, help="phases netCDF file to write")
    defaults = _phase_defaults()
    sub.add_argument("--tolerance", type=float, default=defaults.tolerance, help="|slope| counted as zero")
    sub.add_argument("--resolution", type=float, default=defaults.resolution, help="smallest resolved relative change")
    sub.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="seed resamples for slope errors")
    sub.add_argument(
        "--divergence-fraction", type=float, default=defaults.divergence_fraction,
        help="share of diverged seeds at the largest width that makes a cell unstable-training",
    )
    sub.add_argument("--min-widths", type=int, default=4, help="widths needed to fit slopes (default 4)")
    sub.add_argument("--gd-rise", type=float, default=1.1, help="loss rise over its start that counts as a catapult")
    sub.add_argument("--min-agreement", type=float, help="fail (after writing) when the agreement is lower")

    sub = command("nonlinear", _nonlinear, "train the nonlinear networks of one experiment (featlearn.nonlinear)")
    sub.add_argument("config", help="configuration YAML or JSON ('-' reads standard input)")
    sub.add_argument("--experiment", required=True, help="name under nonlinear.experiments")
    sub.add_argument("--output", required=True, help="netCDF file to write")
    sub.add_argument("--threads", type=int, help="torch threads (default: nonlinear.threads)")

    sub = command("figure", _figure, "draw a registered figure from netCDF inputs")
    sub.add_argument("name", help="figure name (the output's stem)")
    sub.add_argument("inputs", nargs="+", help="netCDF inputs")
    sub.add_argument("--output", required=True, help="PNG path; a PDF is written beside it")
    sub.add_argument("--options", help="figure options as a JSON object")

    sub = command("archive", _archive, "pack a results folder with checksums, provenance and RO-Crate metadata")
    sub.add_argument("results", help="results folder (RESULTS_DIR)")
    sub.add_argument("--output", required=True, help=".tar.gz file to write")
    sub.add_argument("--config", nargs="*", default=[], help="configuration files as given to the run")
    sub.add_argument("--resolved-config", help="the configuration as resolved, as JSON ('-' reads standard input)")
    sub.add_argument("--snakemake-dir", help="Snakemake's state folder with the run's logs (default: .snakemake beside RESULTS_DIR)")

    sub = command("verify", _verify, "check that an archive holds exactly the files of its MANIFEST.sha256, checksums matching")
    sub.add_argument("archive", help=".tar.gz written by `featlearn archive`")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featlearn`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (cfg.ConfigError, FileNotFoundError, ValueError) as error:
        print(f"featlearn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
