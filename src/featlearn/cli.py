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
    config = cfg.load(sys.stdin if args.config == "-" else args.config)
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

    merged = simulate.merge_chunks([io.read_netcdf(path) for path in args.parts])
    io.write_netcdf(merged, args.output)
    print(f"merged {len(args.parts)} chunks into {args.output}", file=sys.stderr)
    return 0


def _figure(args: argparse.Namespace) -> int:
    from featlearn import figures

    options = json.loads(args.options) if args.options else {}
    figure = figures.draw(args.name, [io.read_netcdf(path) for path in args.inputs], **options)
    io.save_figure(figure, args.output)
    return 0


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

    sub = command("figure", _figure, "draw a registered figure from netCDF inputs")
    sub.add_argument("name", help="figure name (the output's stem)")
    sub.add_argument("inputs", nargs="+", help="netCDF inputs")
    sub.add_argument("--output", required=True, help="PNG path; a PDF is written beside it")
    sub.add_argument("--options", help="figure options as a JSON object")

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
