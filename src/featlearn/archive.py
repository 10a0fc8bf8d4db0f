"""Archive stage: pack a results folder into a self-describing, checkable ``.tar.gz``.

The archive holds one top-level folder named like the results folder (so
unpacking it in a fresh clone puts ``results/`` back where the workflow
expects it) with

- every file of the results folder (datasets, figures, reports), modification
  times kept, so Snakemake finds the restored outputs up to date;
- ``config/given/<file>`` (the configuration files as given to the run) and
  ``config/resolved.yaml`` (as validated, defaults filled in);
- ``provenance.json``: package versions, git commit and dirty flag, platform,
  the Snakemake command lines (from its logs, ``.snakemake/log``), and the
  wall time, memory peak and start/end of every job and stage, from the
  files the rules' ``benchmark:`` directive writes (``logs/benchmarks``);
- ``ro-crate-metadata.json``: an RO-Crate 1.3 description (Process Run Crate)
  of the run, written with the ``rocrate`` library;
- ``MANIFEST.sha256``: the SHA-256 of every other file, in ``sha256sum``
  format (``cd results && sha256sum -c MANIFEST.sha256`` checks an unpacked copy).

:func:`verify_archive` accepts an archive only when its files are exactly
those of the manifest, each with its checksum.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from featlearn import __version__, io
from featlearn.errors import InputError

MANIFEST = "MANIFEST.sha256"
PROVENANCE = "provenance.json"
CRATE_METADATA = "ro-crate-metadata.json"
GIVEN_CONFIG_DIR = "config/given"
RESOLVED_CONFIG = "config/resolved.yaml"

#: Media types of the files a run writes (RO-Crate ``encodingFormat``).
MEDIA_TYPES = {
    ".nc": "application/x-netcdf",
    ".png": "image/png",
    ".pdf": "application/pdf",
    ".html": "text/html",
    ".yaml": "application/yaml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".sha256": "text/plain",
}

_READ_BLOCK = 1 << 20


def _sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(_READ_BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's content."""
    with open(path, "rb") as handle:
        return _sha256(handle)


def results_files(results_dir: Path, exclude: Iterable[Path] = ()) -> list[str]:
    """Paths (POSIX, relative to ``results_dir``) of the files to archive, sorted.

    Hidden files are left out: they are the temporary files of writes in
    progress (:func:`featlearn.io.atomic_path`).
    """
    excluded = {Path(path).resolve() for path in exclude}
    found = []
    for path in results_dir.rglob("*"):
        relative = path.relative_to(results_dir)
        if any(part.startswith(".") for part in relative.parts) or path.resolve() in excluded:
            continue
        if path.is_file():
            found.append(relative.as_posix())
    return sorted(found)


# --- Snakemake's records of the run -------------------------------------------------------------


def _iso(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, _dt.UTC).isoformat(timespec="seconds")


def benchmark_jobs(benchmarks_dir: Path) -> list[dict[str, Any]]:
    """Every job the run timed, from the files of the rules' ``benchmark:`` directive.

    The workflow writes one tab-separated file per job to
    ``<benchmarks_dir>/<rule>/<job>.tsv`` (Snakemake's columns: ``s`` wall
    seconds, ``max_rss`` MB, ``cpu_time`` seconds, ...); a file is written
    when its job ends, so its modification time is the job's end.
    """
    jobs = []
    for path in sorted(benchmarks_dir.glob("*/**/*.tsv")) if benchmarks_dir.is_dir() else []:
        lines = path.read_text().splitlines()
        if len(lines) < 2:
            continue
        row = dict(zip(lines[0].split("\t"), lines[-1].split("\t")))
        end = path.stat().st_mtime
        seconds = float(row.get("s", "nan"))
        rule, *job_parts = path.relative_to(benchmarks_dir).parts
        job = {
            "rule": rule,
            "job": PurePosixPath(*job_parts).with_suffix("").as_posix(),
            "seconds": seconds,
            "start": _iso(end - seconds),
            "end": _iso(end),
        }
        for column, key in (("max_rss", "max_rss_mb"), ("cpu_time", "cpu_seconds")):
            try:
                job[key] = float(row[column])
            except (KeyError, ValueError):  # "NA" where the job ended before it could be measured
                pass
        jobs.append(job)
    return sorted(jobs, key=lambda job: (job["start"], job["rule"], job["job"]))


def stage_times(jobs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule (stage): number of jobs, their total wall seconds, first start and last end (ISO 8601, UTC)."""
    stages: dict[str, dict[str, Any]] = {}
    for job in jobs:
        stage = stages.setdefault(job["rule"], {"jobs": 0, "seconds": 0.0, "start": job["start"], "end": job["end"]})
        stage["jobs"] += 1
        stage["seconds"] = round(stage["seconds"] + job["seconds"], 4)
        stage["start"] = min(stage["start"], job["start"])
        stage["end"] = max(stage["end"], job["end"])
    return stages


def snakemake_invocations(snakemake_dir: Path) -> list[dict[str, str]]:
    """The Snakemake command lines of the runs in this folder, from their log files."""
    invocations = []
    log_dir = snakemake_dir / "log"
    for log in sorted(log_dir.glob("*.snakemake.log")) if log_dir.is_dir() else []:
        match = re.search(r"^\s*Command: (.*)$", log.read_text(errors="replace"), re.MULTILINE)
        if match:
            invocations.append({"log": log.name, "command": match.group(1), "last_written": _iso(log.stat().st_mtime)})
    return invocations


# --- Provenance and RO-Crate --------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    """Installed versions of Python and of featlearn's dependencies."""
    versions = {"python": platform.python_version(), "featlearn": __version__}
    for requirement in importlib.metadata.requires("featlearn") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(snakemake_dir: Path, benchmarks_dir: Path, started: str) -> dict[str, Any]:
    """Where, how and with what the results were made (the content of ``provenance.json``)."""
    commit = io.git_commit()
    jobs = benchmark_jobs(benchmarks_dir)
    return {
        "featlearn_version": __version__,
        "git": {"commit": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty")},
        "packages": package_versions(),
        "platform": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": sys.version,
            "hostname": platform.node(),
            "cpus": os.cpu_count(),
        },
        "commands": {"archive": " ".join(sys.argv), "snakemake": snakemake_invocations(snakemake_dir)},
        "stages": stage_times(jobs),
        "jobs": jobs,
        "archive_started": started,
        "archive_finished": io.utc_now(),
    }


def crate_metadata(
    root_name: str, files: Mapping[str, Path], checksums: Mapping[str, str], record: Mapping[str, Any]
) -> dict[str, Any]:
    """RO-Crate metadata (JSON-LD) of the archived folder: every file with its format, size
    and checksum, and the run as a CreateAction of the featlearn software (Process Run Crate)."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    crate = ROCrate()
    crate.name = f"featlearn {root_name}"
    crate.description = (
        "Datasets, figures and reports of a featlearn run (Xu & Ziyin, Three Mechanisms of "
        "Feature Learning in a Linear Network, ICLR 2025), with the configuration and provenance."
    )
    entities = {}
    for name, source in files.items():
        properties = {"contentSize": str(source.stat().st_size)}
        if Path(name).suffix in MEDIA_TYPES:
            properties["encodingFormat"] = MEDIA_TYPES[Path(name).suffix]
        if name in checksums:
            properties["sha256"] = checksums[name]
        entities[name] = crate.add_file(source, dest_path=name, properties=properties)
    software = crate.add(
        ContextEntity(
            crate,
            "#featlearn",
            properties={"@type": "SoftwareApplication", "name": "featlearn", "version": __version__},
        )
    )
    stages = record["stages"].values()
    run = {
        "name": "featlearn pipeline run (Snakemake)",
        "description": "; ".join(invocation["command"] for invocation in record["commands"]["snakemake"]),
    }
    if stages:
        run["startTime"] = min(stage["start"] for stage in stages)
        run["endTime"] = max(stage["end"] for stage in stages)
    configs = [entity for name, entity in entities.items() if name.startswith("config/")]
    results = [entity for name, entity in entities.items() if not name.startswith("config/") and name != PROVENANCE]
    action = crate.add_action(software, object=configs, result=results, properties=run)
    crate.root_dataset["mentions"] = [action]
    crate.root_dataset["conformsTo"] = [{"@id": "https://w3id.org/ro/wfrun/process/0.5"}]
    return crate.metadata.generate()


# --- Archive and verify -------------------------------------------------------------------------


def _normalised(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner-free tar entries: the archive does not depend on who ran the pipeline."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def _write_text(text: str, target: Path) -> None:
    target.write_text(text)


def create_archive(
    results_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    given_configs: Sequence[str | os.PathLike[str]] = (),
    resolved_config: Mapping[str, Any] | None = None,
    benchmarks_dir: str | os.PathLike[str] | None = None,
    snakemake_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Pack ``results_dir`` as described in the module docstring; return the archived names
    (relative to the archive's top folder, manifest last).

    ``benchmarks_dir`` (the jobs' ``benchmark:`` files) defaults to
    ``logs/benchmarks`` beside ``results_dir``, ``snakemake_dir`` (for the
    command lines in Snakemake's logs) to ``.snakemake`` beside it.
    """
    started = io.utc_now()
    results = Path(results_dir)
    if not results.is_dir():
        raise InputError(f"results folder {results} does not exist")
    results = results.resolve()
    snakemake = Path(snakemake_dir) if snakemake_dir is not None else results.parent / ".snakemake"
    benchmarks = Path(benchmarks_dir) if benchmarks_dir is not None else results.parent / "logs" / "benchmarks"
    data = results_files(results, exclude=[Path(output)])
    files = {name: results / name for name in data}

    with tempfile.TemporaryDirectory() as staging_name:
        staging = Path(staging_name)

        def stage(name: str, writer: Callable[[Any, Path], Any], content: Any) -> None:
            if name in files:
                raise InputError(f"{results}/{name} exists: the archive writes its own file under that name")
            writer(content, staging / name)
            files[name] = staging / name

        for config_path in map(Path, given_configs):
            name = f"{GIVEN_CONFIG_DIR}/{config_path.name}"
            if name in files:
                raise InputError(f"two configuration files named {config_path.name}")
            stage(name, _copy_file, config_path)
        if resolved_config is not None:
            stage(RESOLVED_CONFIG, io.write_yaml, dict(resolved_config))
        record = provenance(snakemake, benchmarks, started)
        stage(PROVENANCE, io.write_json, record)
        checksums = {name: sha256_file(path) for name, path in files.items()}
        stage(CRATE_METADATA, io.write_json, crate_metadata(results.name, files, checksums, record))
        checksums[CRATE_METADATA] = sha256_file(files[CRATE_METADATA])
        manifest = "".join(f"{checksums[name]}  {name}\n" for name in sorted(checksums))
        stage(MANIFEST, _write_text, manifest)

        # dereference: a symlinked output is stored as the file it points to.
        with io.atomic_path(output) as tmp, tarfile.open(tmp, "w:gz", dereference=True) as tar:
            for name, source in files.items():
                tar.add(source, arcname=f"{results.name}/{name}", recursive=False, filter=_normalised)
    return list(files)


@dataclass
class Verification:
    """Result of :func:`verify_archive`: files checked and every problem found (empty: valid)."""

    files: int = 0
    problems: list[str] = field(default_factory=list)
    #: The archive's top-level folder (``results``), when it has exactly one.
    root: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse_manifest(text: str) -> tuple[dict[str, str], list[str]]:
    entries: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if match is None:
            problems.append(f"{MANIFEST} line {number} is not '<sha256>  <path>': {line!r}")
        else:
            entries[match.group(2)] = match.group(1)
    return entries, problems


def verify_archive(path: str | os.PathLike[str]) -> Verification:
    """Check that the archive holds exactly the files of its ``MANIFEST.sha256``, each with
    its checksum, under one top-level folder; every problem found names the file."""
    result = Verification()
    checksums: dict[str, str] = {}
    manifest_text: str | None = None
    roots = set()
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith("/") or ".." in parts or not parts:
                    result.problems.append(f"unsafe path in archive: {member.name}")
                    continue
                roots.add(parts[0])
                if member.isdir():
                    continue
                if not member.isfile():
                    result.problems.append(f"not a regular file: {member.name}")
                    continue
                name = PurePosixPath(*parts[1:]).as_posix()
                stream = tar.extractfile(member)
                if name == MANIFEST:
                    manifest_text = stream.read().decode(errors="replace")
                else:
                    checksums[name] = _sha256(stream)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        result.problems.append(f"not a readable .tar.gz archive: {error}")
        return result
    if len(roots) == 1:
        (result.root,) = roots
    else:
        result.problems.append(f"expected one top-level folder, found {sorted(roots) or 'none'}")
    if manifest_text is None:
        result.problems.append(f"no {MANIFEST} in the archive")
        return result
    expected, problems = _parse_manifest(manifest_text)
    result.problems.extend(problems)
    for name in sorted(expected.keys() - checksums.keys()):
        result.problems.append(f"missing file (listed in {MANIFEST}): {name}")
    for name in sorted(checksums.keys() - expected.keys()):
        result.problems.append(f"extra file (not in {MANIFEST}): {name}")
    for name in sorted(expected.keys() & checksums.keys()):
        if expected[name] != checksums[name]:
            result.problems.append(f"checksum mismatch: {name}")
    result.files = len(expected.keys() & checksums.keys())
    return result


def _folder_problems(folder: Path) -> list[str]:
    """What in an unpacked archive folder differs from its manifest (``sha256sum -c``, and no extra file)."""
    expected, problems = _parse_manifest((folder / MANIFEST).read_text(errors="replace"))
    found = set(results_files(folder)) - {MANIFEST}
    problems += [f"missing file (listed in {MANIFEST}): {name}" for name in sorted(expected.keys() - found)]
    problems += [f"extra file (not in {MANIFEST}): {name}" for name in sorted(found - expected.keys())]
    problems += [
        f"checksum mismatch: {name}"
        for name in sorted(expected.keys() & found)
        if sha256_file(folder / name) != expected[name]
    ]
    return problems


def restore_archive(
    path: str | os.PathLike[str], directory: str | os.PathLike[str] = ".", *, force: bool = False
) -> tuple[Path, int]:
    """Verify the archive, then unpack it into ``directory``; return the restored folder and its file count.

    Nothing is written unless :func:`verify_archive` accepts the archive.
    Members are extracted with ``tarfile``'s ``data`` filter (no absolute
    paths, no ``..``, no links out of the folder, no special files),
    modification times kept (so the workflow finds the outputs up to date),
    into a hidden staging folder whose files are checked against the
    manifest again before it is renamed into place: what lands under the
    final name is what the manifest lists. The archive's top folder
    (``results``) is never unpacked over a non-empty folder unless ``force``,
    which replaces that folder whole (restored results are never mixed with
    other files). Raises :class:`InputError` naming every problem.
    """
    verification = verify_archive(path)
    if not verification.ok:
        raise InputError(f"{path}: not restored, the archive fails verification: " + "; ".join(verification.problems))
    parent = Path(directory)
    target = parent / verification.root
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} exists and is not a folder: not restored")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise InputError(
            f"{target} is not empty: restoring would mix two sets of results. Restore into another folder "
            "(featlearn restore ARCHIVE DIR), or pass --force to replace it"
        )
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".featlearn-restore-", dir=parent))
    try:
        with tarfile.open(path, "r:gz") as tar:
            tar.extractall(staging, filter="data")
        problems = _folder_problems(staging / verification.root)
        if problems:
            raise InputError(
                f"{path}: not restored, the unpacked files differ from the manifest: " + "; ".join(problems)
            )
        if target.exists():
            target.rename(staging / "replaced")
        (staging / verification.root).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, verification.files
