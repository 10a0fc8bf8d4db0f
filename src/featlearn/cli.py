"""Command line: ``featlearn <stage> ...``, a thin layer over the stage functions.

Every stage command has the same shape, and the Snakemake rules call it so::

    featlearn STAGE [INPUTS...] --output OUT --settings JSON

``--settings`` is one JSON object (or ``@FILE``, a JSON or YAML file),
built by the workflow from the stage's section of the resolved
configuration and parsed here into the stage's typed settings object. A few
commands also take options that come from the job rather than the
configuration (``--chunk``/``--chunks`` of a simulation job, ``--threads``).
Settings carry no defaults here: defaults live in the configuration schema
and are filled in when a configuration is validated.

Errors a user can fix (a bad configuration, bad settings, a missing or
unsuitable input file: :class:`featlearn.errors.UserError`) are printed as
one message with exit status 2; anything else is a bug and keeps its
traceback. Stage modules are imported inside each handler, so a job loads
only what its stage runs (and ``featlearn.dag.code_version`` hashes only that).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from featlearn import __version__
from featlearn.errors import CheckError, InputError, UserError

Handler = Callable[[argparse.Namespace], int]


def _settings(text: str | None) -> dict[str, Any]:
    """The ``--settings`` argument as a mapping: JSON text, or ``@FILE`` (JSON or YAML)."""
    if text is None:
        return {}
    if text.startswith("@"):
        import yaml

        path = Path(text[1:])
        if not path.is_file():
            raise InputError(f"--settings: no such file: {path}")
        try:
            value = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise InputError(f"--settings: {path} is not YAML or JSON: {error}") from None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"--settings: not a JSON object ({error})") from None
    if not isinstance(value, dict):
        raise InputError("--settings: expected a JSON object")
    return value


def typed(cls: type, mapping: Mapping[str, Any], where: str = "--settings") -> Any:
    """``cls(**mapping)`` for a dataclass or named tuple, naming unknown and missing keys."""
    fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls._fields)
    unknown = sorted(set(mapping) - set(fields))
    missing = [name for name in fields if name not in mapping]
    if unknown or missing:
        parts = [f"unknown keys {unknown}" if unknown else "", f"missing keys {missing}" if missing else ""]
        raise InputError(f"{where}: " + "; ".join(p for p in parts if p) + f" (expected: {', '.join(fields)})")
    return cls(**mapping)


def _built(factory: Callable[[Mapping[str, Any]], Any], settings: Mapping[str, Any], what: str) -> Any:
    """``factory(settings)``, a missing key or a value of the wrong type reported as bad settings."""
    try:
        return factory(settings)
    except (KeyError, TypeError) as error:
        raise InputError(f"--settings: not {what} ({type(error).__name__}: {error})") from None


def _inputs(paths: Sequence[str]) -> list[str]:
    """The input paths, each checked to exist."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"input file not found: {path}")
    return list(paths)


def _read(path: str, kind: str | tuple[str, ...] | None = None, *, lazy: bool = False):
    """Open a featlearn netCDF input, checking its kind (one, or one of several) when one is expected."""
    from featlearn import contract, io

    (path,) = _inputs([path])
    ds = io.read_netcdf(path, lazy=lazy)
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and contract.kind_of(ds) not in ("", *kinds):
        raise InputError(f"{path}: a {contract.kind_of(ds)} file, expected {' or '.join(kinds)}")
    return ds


def _validate(args: argparse.Namespace) -> int:
    from featlearn import grid, io, validation

    config = validation.load(args.config)
    if args.experiment:
        resolved = validation.experiment_config(config, args.experiment)
        experiment = grid.Experiment.from_config(resolved, args.experiment)
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
        names = [*config["experiments"], *config["nonlinear"]["experiments"]]
        print(f"{args.config}: valid, experiments {', '.join(names)}", file=sys.stderr)
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from featlearn import io, validation

    settings = _settings(args.settings)
    # The workflow hands over one experiment already resolved; validating it again here
    # makes the file trustworthy on its own (and refuses settings edited by hand).
    resolved = validation.validate(settings)
    io.write_yaml(validation.experiment_config(resolved, _only_experiment(resolved)), args.output)
    return 0


def _only_experiment(config: Mapping[str, Any]) -> str:
    names = list(config.get("experiments", {}))
    if len(names) != 1:
        raise InputError(f"--settings: expected the configuration of one experiment, found {len(names)}: {names}")
    return names[0]


def _simulate(args: argparse.Namespace) -> int:
    from featlearn import grid, io, simulation

    settings = _settings(args.settings)
    name = _only_experiment(settings)
    # `featlearn validate CONFIG --experiment NAME --output RESOLVED.yaml` writes such a configuration.
    experiment = _built(lambda s: grid.Experiment.from_config(s, name), settings, "a resolved experiment configuration")
    ds = simulation.simulate_chunk(experiment, args.chunk, args.chunks, config=settings)
    io.write_netcdf(ds, args.output)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from featlearn import io, simulation

    # Lazy: the chunks stream onto the grid block by block as the result is written.
    merged = simulation.merge_chunks([_read(path, "trajectories_chunk", lazy=True) for path in args.parts])
    io.write_netcdf(merged, args.output)
    print(f"merged {len(args.parts)} chunks into {args.output}", file=sys.stderr)
    return 0


def _mechanisms(args: argparse.Namespace) -> int:
    from featlearn import io, mechanism_detection
    from featlearn.contract import PRIMARY_LABELS

    thresholds = typed(mechanism_detection.Thresholds, _settings(args.settings))
    # Lazy: the grid streams through in blocks of runs, so it may be larger than memory.
    trajectories = _read(args.trajectories, "trajectories", lazy=True)
    detected = mechanism_detection.detect(trajectories, thresholds)
    experiment = trajectories.attrs.get("experiment", "")
    # The thresholds are stored as attributes; the configuration hash is the runs' own.
    detected.attrs.update(io.derived_attrs("mechanisms", trajectories))
    io.write_netcdf(detected, args.output)
    counts = ", ".join(
        f"{label} {int((detected['primary'] == code).sum())}" for code, label in enumerate(PRIMARY_LABELS)
    )
    print(f"{experiment}: primary labels: {counts}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from featlearn import phase_diagram

    exponents = (args.a, args.b_u, args.b_w, args.c_u, args.c_w)
    predicted = phase_diagram.predict_phase(*exponents, **({} if args.rho is None else {"rho": args.rho}))._asdict()
    if args.json:
        print(json.dumps(predicted))
    else:
        values = ", ".join(f"{name} = {predicted[name]:g}" for name in ("e0", "eM", "eF", "elam"))
        print(f"{predicted['phase']} ({values})")
    return 0


def _phases(args: argparse.Namespace) -> int:
    from featlearn import io, phase_diagram

    settings = _built(phase_diagram.PhaseSettings.from_config, _settings(args.settings), "the phases section")
    # Lazy: the per-run measurements stream through in blocks of runs. A nonlinear phase plane's
    # runs hold the same variables, measured on networks.
    trajectories = _read(args.trajectories, ("trajectories", "nonlinear_plane"), lazy=True)
    result = phase_diagram.analyse(trajectories, settings)
    experiment = trajectories.attrs.get("experiment", "")
    # The fit settings are stored as attributes; the configuration hash is the runs' own (and a plane's
    # network and data, which its figure names).
    result.attrs.update(io.derived_attrs("phases", trajectories))
    result.attrs.update({key: trajectories.attrs[key] for key in ("network", "dataset") if key in trajectories.attrs})
    io.write_netcdf(result, args.output)
    if "agreement" in result.attrs:
        agreement = result.attrs["agreement"]
        print(f"{experiment}: agreement {agreement:.3f} over {result.attrs['cells']} cells", file=sys.stderr)
        print(f"{experiment}: disagreeing cells: {result.attrs['disagreeing_cells']}", file=sys.stderr)
        if settings.min_agreement is not None and agreement < settings.min_agreement:
            raise CheckError(f"{experiment}: agreement {agreement:.3f} is below min_agreement {settings.min_agreement}")
    return 0


def _trained(
    args: argparse.Namespace,
    key: str,
    build: Callable[[Mapping[str, Any]], Any],
    run: Callable[..., Any],
    label: str,
    solver: str,
) -> int:
    """Train the runs of one resolved nonlinear entry (``--settings {name, KEY, cifar10_path}``) and write them.

    ``build`` types the mapping, ``run`` trains it; the runs depend on the
    entry (and the CIFAR-10 folder), nothing else of the configuration.
    """
    settings = _settings(args.settings)
    for required in ("name", key, "cifar10_path"):
        if required not in settings:
            raise InputError(f"--settings: missing key {required!r} (expected: name, {key}, cifar10_path)")
    import torch

    from featlearn import io

    torch.set_num_threads(args.threads)
    mapping, cifar10_path = settings[key], settings["cifar10_path"]
    spec = _built(build, mapping, f"a resolved nonlinear {key}")
    ds = run(spec, cifar10_path=cifar10_path, progress=lambda message: print(message, file=sys.stderr))
    provenance = {key: mapping, "cifar10_path": cifar10_path}
    ds.attrs.update(io.provenance_attrs(f"{label}: {settings['name']}", solver, provenance))
    ds.attrs["experiment"] = settings["name"]
    io.write_netcdf(ds, args.output)
    return 0


def _train(args: argparse.Namespace) -> int:
    from featlearn.nonlinear.spec import ExperimentSpec
    from featlearn.nonlinear.train import run_experiment

    return _trained(args, "experiment", ExperimentSpec.from_mapping, run_experiment, "featlearn nonlinear", "torch-gd")


def _train_plane(args: argparse.Namespace) -> int:
    from featlearn.nonlinear.planes import train_plane
    from featlearn.nonlinear.spec import PlaneSpec

    return _trained(args, "plane", PlaneSpec.from_mapping, train_plane, "featlearn nonlinear plane", "gd")


def _figure(args: argparse.Namespace) -> int:
    from featlearn import contract, figures, io

    datasets: dict[str, list[Any]] = {}
    for path in _inputs(args.inputs):
        ds = io.read_netcdf(path)
        datasets.setdefault(contract.kind_of(ds), []).append(ds)
    if "" in datasets:
        raise InputError(f"{len(datasets[''])} input(s) record no {contract.KIND_ATTRIBUTE}: not written by featlearn")
    io.save_figure(figures.draw(args.name, datasets, _settings(args.settings)), args.output)
    return 0


def _summary(args: argparse.Namespace) -> int:
    from featlearn import io, summary

    settings = typed(summary.Settings, _settings(args.settings))
    figures = [typed(summary.Figure, figure, "--settings: figures") for figure in settings.figures]
    (template,) = _inputs([args.template])
    # Lazy: only the labels and attributes are read, not the time-resolved variables.
    page = summary.front_page(Path(template).read_text(), [_read(path, lazy=True) for path in args.inputs], figures)
    with io.atomic_path(args.output) as path:
        path.write_text(page)
    return 0


def _archive(args: argparse.Namespace) -> int:
    from featlearn import archive

    settings = _settings(args.settings)
    names = archive.create_archive(
        args.results,
        args.output,
        given_configs=settings.get("configfiles", []),
        resolved_config=settings.get("config"),
        benchmarks_dir=settings.get("benchmarks"),
        snakemake_dir=settings.get("snakemake"),
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


def _restore(args: argparse.Namespace) -> int:
    from featlearn import archive

    target, files = archive.restore_archive(args.archive, args.directory, force=args.force)
    print(f"{args.archive}: {files} files verified against {archive.MANIFEST} and restored into {target}")
    return 0


SETTINGS_HELP = "settings as one JSON object, or @FILE (JSON or YAML)"


def build_parser() -> argparse.ArgumentParser:
    """The ``featlearn`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="featlearn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"featlearn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str, *, output: str | None = None, settings: str | None = None):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if output is not None:
            sub.add_argument("--output", required=True, help=output)
        if settings is not None:
            sub.add_argument("--settings", required=True, help=f"{SETTINGS_HELP}: {settings}")
        return sub

    sub = command(
        "validate", _validate, "check a configuration against the schema and rules; optionally write it resolved"
    )
    sub.add_argument("config", help="configuration YAML or JSON ('-' reads standard input)")
    sub.add_argument("--experiment", help="resolve only this experiment")
    sub.add_argument("--output", help="write the resolved configuration here (YAML)")

    command(
        "resolve",
        _resolve,
        "validate one experiment's configuration and write it resolved",
        output="YAML file to write",
        settings="the configuration of one experiment (simulation and experiments.NAME sections)",
    )

    sub = command(
        "simulate",
        _simulate,
        "simulate one chunk of an experiment's grid",
        output="netCDF file to write",
        settings="one experiment's resolved configuration (what `featlearn resolve` writes)",
    )
    sub.add_argument("--chunk", type=int, required=True, help="chunk index, 0-based")
    sub.add_argument("--chunks", type=int, required=True, help="number of chunks of the grid")

    sub = command("merge", _merge, "merge simulation chunks into the experiment's grid", output="netCDF file to write")
    sub.add_argument("parts", nargs="+", help="chunk netCDF files")

    sub = command(
        "mechanisms",
        _mechanisms,
        "detect alignment, disalignment, rescaling and kernel runs",
        output="mechanisms netCDF file to write",
        settings="the flag thresholds {eps_c, eps_rho, eps_K} (the mechanisms section)",
    )
    sub.add_argument("trajectories", help="trajectories netCDF of one experiment")

    sub = command("predict", _predict, "predict the phase of width exponents (a, b_u, b_w, c_u, c_w)")
    for option, what in (
        ("--a", "kappa"),
        ("--b-u", "sigma_u"),
        ("--b-w", "sigma_w"),
        ("--c-u", "eta_u"),
        ("--c-w", "eta_w"),
    ):
        sub.add_argument(option, type=float, required=True, help=f"width exponent of {what} (value ~ d^-exponent)")
    sub.add_argument("--rho", type=float, help="initial correlation of u and w (nonzero: coherent output; default 0)")
    sub.add_argument("--json", action="store_true", help="print one JSON object: phase, e0, eM, eF, elam")

    sub = command(
        "phases",
        _phases,
        "classify the phases of an experiment from its width sweeps",
        output="phases netCDF file to write",
        settings="the phases section (fit, gd_rise, strict, min_agreement)",
    )
    sub.add_argument("trajectories", help="trajectories netCDF of one experiment, or a nonlinear plane's runs")

    sub = command(
        "train",
        _train,
        "train the nonlinear networks of one experiment (featlearn.nonlinear)",
        output="netCDF file to write",
        settings="{name, experiment: the resolved nonlinear.experiments.NAME section, cifar10_path}",
    )
    sub.add_argument("--threads", type=int, required=True, help="torch threads")

    sub = command(
        "train-plane",
        _train_plane,
        "train the networks of one nonlinear phase plane (featlearn.nonlinear.planes)",
        output="netCDF file to write",
        settings="{name, plane: the resolved nonlinear.planes.NAME section, cifar10_path}",
    )
    sub.add_argument("--threads", type=int, required=True, help="torch threads")

    sub = command(
        "figure",
        _figure,
        "draw a figure of the figure table from featlearn netCDF inputs",
        output="PNG path; a PDF is written beside it",
        settings="the figure's options",
    )
    sub.add_argument("name", help="figure name (an entry of featlearn.figures.table)")
    sub.add_argument("inputs", nargs="+", help="netCDF inputs (each records its kind)")

    sub = command(
        "summary",
        _summary,
        "write the report's front page: what the run found, from its outputs (featlearn.summary)",
        output="reStructuredText file to write",
        settings="{figures: [{stem, figure, experiments}, ...]: the figures of the run}",
    )
    sub.add_argument("template", help="the report's static page, with the line the summary replaces")
    sub.add_argument("inputs", nargs="*", help="mechanisms, phases and nonlinear netCDF files of the run")

    sub = command(
        "archive",
        _archive,
        "pack a results folder with checksums, provenance and RO-Crate metadata",
        output=".tar.gz file to write",
        settings="{configfiles: [...], config: the resolved configuration, benchmarks: folder, snakemake: folder}",
    )
    sub.add_argument("results", help="results folder (RESULTS_DIR)")

    sub = command(
        "verify", _verify, "check that an archive holds exactly the files of its MANIFEST.sha256, checksums matching"
    )
    sub.add_argument("archive", help=".tar.gz written by `featlearn archive`")

    sub = command(
        "restore",
        _restore,
        "verify an archive, then unpack its results folder (never over a non-empty one without --force)",
    )
    sub.add_argument("archive", help=".tar.gz written by `featlearn archive`")
    sub.add_argument("directory", nargs="?", default=".", help="folder to restore into (default: the current one)")
    sub.add_argument("--force", action="store_true", help="replace a non-empty results folder")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``featlearn`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"featlearn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
