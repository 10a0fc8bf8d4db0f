"""Archive and verify: contents, provenance, RO-Crate metadata, tamper detection, restore."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io as _io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from featlearn import archive, io
from featlearn.errors import InputError

SMOKE_CONFIG = "config/smoke.yaml"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_run(root: Path) -> Path:
    """A workflow folder with a small results/ and the Snakemake records of the job that wrote it."""
    results = root / "results"
    dataset = xr.Dataset({"loss": ("time", np.linspace(1.0, 0.0, 5), {"long_name": "loss", "units": "1"})})
    io.write_netcdf(dataset, results / "exp" / "trajectories.nc")
    (results / "figures").mkdir()
    (results / "figures" / "fig.png").write_bytes(b"\x89PNG not really")
    (results / ".trajectories.nc.abc.tmp").write_bytes(b"a write in progress")
    # The benchmark file of the job (Snakemake's format), written when the job ended.
    benchmark = root / "logs" / "benchmarks" / "merge" / "exp.tsv"
    benchmark.parent.mkdir(parents=True)
    benchmark.write_text("s\th:m:s\tmax_rss\tmax_vms\tcpu_time\n42.0000\t0:00:42\t120.5\t300.0\tNA\n")
    os.utime(benchmark, (1_700_000_042.0, 1_700_000_042.0))
    log = root / ".snakemake" / "log" / "2026-01-01T000000.000000.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("SNAKEMAKE\n  Command: snakemake --cores 2\n")
    (root / "given.yaml").write_text("experiments: {}\n")
    return results


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    results = fake_run(tmp_path)
    output = results / "featlearn-archive.tar.gz"  # inside the folder it packs: must leave itself out
    archive.create_archive(
        results, output, given_configs=[tmp_path / "given.yaml"], resolved_config={"experiments": {"x": 1}}
    )
    return output


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def repack(source: Path, target: Path, change) -> Path:
    """Copy an archive, passing every (name, content) through ``change`` (None drops the file);
    ``change`` may return a dict of extra files under the key ``None``."""
    with tarfile.open(target, "w:gz") as tar:
        files = members(source)
        for name, content in list(files.items()) + list((change(None, None) or {}).items()):
            new = change(name, content) if name in files else content
            if new is None:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(new)
            tar.addfile(info, _io.BytesIO(new))
    return target


def test_archive_holds_every_file_once_with_checksums(packed):
    files = members(packed)
    root = "results/"
    assert all(name.startswith(root) for name in files)
    names = {name.removeprefix(root) for name in files}
    assert names == {
        "exp/trajectories.nc", "figures/fig.png", "config/given/given.yaml", "config/resolved.yaml",
        "provenance.json", "ro-crate-metadata.json", "MANIFEST.sha256",
    }  # fmt: skip
    manifest = files[root + "MANIFEST.sha256"].decode().splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in manifest)
    assert set(listed) == names - {"MANIFEST.sha256"}
    for name, digest in listed.items():
        assert sha256(files[root + name]) == digest, name
    assert files[root + "config/given/given.yaml"] == b"experiments: {}\n"


def test_manifest_is_sha256sum_format(packed, tmp_path):
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum not installed")
    with tarfile.open(packed) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    unpacked = tmp_path / "unpacked" / "results"
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "MANIFEST.sha256"], cwd=unpacked, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_provenance(packed):
    record = json.loads(members(packed)["results/provenance.json"])
    assert record["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert record["packages"]["xarray"] == importlib.metadata.version("xarray")
    assert isinstance(record["git"]["dirty"], bool)
    assert record["git"]["commit"] == io.git_commit().removesuffix("-dirty")
    assert record["commands"]["snakemake"][0]["command"] == "snakemake --cores 2"
    stage = {"jobs": 1, "seconds": 42.0, "start": "2023-11-14T22:13:20+00:00", "end": "2023-11-14T22:14:02+00:00"}
    assert record["stages"] == {"merge": stage}
    # cpu_time NA (the job ended before it was sampled) is left out, not stored as a string.
    assert record["jobs"] == [
        {
            "rule": "merge",
            "job": "exp",
            "seconds": 42.0,
            "start": stage["start"],
            "end": stage["end"],
            "max_rss_mb": 120.5,
        }
    ]
    assert record["platform"]["python"] == sys.version


def test_ro_crate_describes_every_file(packed):
    files = members(packed)
    crate = json.loads(files["results/ro-crate-metadata.json"])
    graph = {entity["@id"]: entity for entity in crate["@graph"]}
    assert graph["ro-crate-metadata.json"]["about"] == {"@id": "./"}
    parts = {part["@id"] for part in graph["./"]["hasPart"]}
    assert parts == {name.removeprefix("results/") for name in files} - {"ro-crate-metadata.json", "MANIFEST.sha256"}
    netcdf = graph["exp/trajectories.nc"]
    assert netcdf["encodingFormat"] == "application/x-netcdf"
    assert netcdf["sha256"] == sha256(files["results/exp/trajectories.nc"])
    action = graph[graph["./"]["mentions"][0]["@id"]]
    assert action["@type"] == "CreateAction"
    assert graph[action["instrument"]["@id"]]["@type"] == "SoftwareApplication"
    assert {"@id": "exp/trajectories.nc"} in action["result"]
    assert action["startTime"] == "2023-11-14T22:13:20+00:00"


def run_verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "featlearn", "verify", str(path)], capture_output=True, text=True, timeout=60
    )


def test_verify_accepts_the_archive(packed):
    result = run_verify(packed)
    assert result.returncode == 0, result.stderr
    assert "6 files verified" in result.stdout


def flip_byte(name, content):
    if name == "results/exp/trajectories.nc":
        content = bytearray(content)
        content[len(content) // 2] ^= 0x01
        return bytes(content)
    return content


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (flip_byte, "checksum mismatch: exp/trajectories.nc"),
        (
            lambda name, content: None if name == "results/figures/fig.png" else content,
            "missing file (listed in MANIFEST.sha256): figures/fig.png",
        ),
        (
            lambda name, content: {"results/extra.nc": b"x"} if name is None else content,
            "extra file (not in MANIFEST.sha256): extra.nc",
        ),
        (lambda name, content: None if name == "results/MANIFEST.sha256" else content, "no MANIFEST.sha256"),
    ],
    ids=["flipped-byte", "missing-file", "extra-file", "no-manifest"],
)
def test_verify_refuses_a_changed_archive(packed, tmp_path, change, message):
    result = archive.verify_archive(repack(packed, tmp_path / "changed.tar.gz", change))
    assert not result.ok
    assert any(message in problem for problem in result.problems), result.problems
    assert archive.verify_archive(repack(packed, tmp_path / "same.tar.gz", lambda name, content: content)).ok


def test_verify_command_exits_1_naming_the_file(packed, tmp_path):
    result = run_verify(repack(packed, tmp_path / "changed.tar.gz", flip_byte))
    assert result.returncode == 1
    assert f"{tmp_path / 'changed.tar.gz'}: checksum mismatch: exp/trajectories.nc" in result.stderr


def test_verify_refuses_a_damaged_file(packed, tmp_path):
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(bytes(data))
    result = run_verify(damaged)
    assert result.returncode == 1
    assert str(damaged) in result.stderr


def test_archive_of_a_missing_folder_is_a_one_line_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "featlearn",
        "archive",
        str(tmp_path / "nope"),
        "--output",
        "x.tar.gz",
        "--settings",
        "{}",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


# --- restore (issue 11, item 3) ------------------------------------------------------------------


def test_restore_verifies_then_unpacks_with_modification_times(packed, tmp_path):
    clone = tmp_path / "clone"
    target, files = archive.restore_archive(packed, clone)
    assert target == clone / "results" and files == 6
    restored = {path.relative_to(target).as_posix(): path.read_bytes() for path in target.rglob("*") if path.is_file()}
    assert restored == {name.removeprefix("results/"): content for name, content in members(packed).items()}
    original = packed.parent / "exp" / "trajectories.nc"
    assert (target / "exp" / "trajectories.nc").stat().st_mtime == original.stat().st_mtime
    assert sorted(path.name for path in clone.iterdir()) == ["results"], "the staging folder is left behind"


def with_member(source: Path, target: Path, info: tarfile.TarInfo, content: bytes = b"") -> Path:
    """A copy of an archive with one more member (a link, a path out of the folder)."""
    with tarfile.open(source) as original, tarfile.open(target, "w:gz") as tar:
        for member in original:
            tar.addfile(member, original.extractfile(member) if member.isfile() else None)
        tar.addfile(info, _io.BytesIO(content) if info.isfile() else None)
    return target


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def regular(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda packed, path: repack(packed, path, flip_byte), "checksum mismatch: exp/trajectories.nc"),
        (lambda packed, path: with_member(packed, path, symlink("results/passwd", "/etc/passwd")), "not a regular"),
        (lambda packed, path: with_member(packed, path, regular("results/../../evil", 1), b"x"), "unsafe path"),
        (lambda packed, path: with_member(packed, path, regular("/tmp/evil", 1), b"x"), "unsafe path"),
    ],
    ids=["flipped-byte", "symlink-out", "dot-dot", "absolute"],
)
def test_restore_refuses_an_archive_that_fails_verification_and_writes_nothing(packed, tmp_path, make, message):
    changed = make(packed, tmp_path / "changed.tar.gz")
    clone = tmp_path / "clone"
    clone.mkdir()
    with pytest.raises(InputError, match="not restored, the archive fails verification") as caught:
        archive.restore_archive(changed, clone)
    assert message in str(caught.value)
    assert list(clone.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()


def test_restore_never_mixes_results_without_force(packed, tmp_path):
    clone = tmp_path / "clone"
    (clone / "results").mkdir(parents=True)
    (clone / "results" / "other.nc").write_bytes(b"another run")
    with pytest.raises(InputError, match=r"is not empty.*--force"):
        archive.restore_archive(packed, clone)
    assert [path.name for path in (clone / "results").iterdir()] == ["other.nc"]
    target, _ = archive.restore_archive(packed, clone, force=True)
    assert not (target / "other.nc").exists(), "--force replaces the folder, it does not mix"
    assert (target / "exp" / "trajectories.nc").is_file()
    assert sorted(path.name for path in clone.iterdir()) == ["results"]


def test_restore_command(packed, tmp_path):
    command = [sys.executable, "-m", "featlearn", "restore"]
    changed = repack(packed, tmp_path / "changed.tar.gz", flip_byte)
    refused = subprocess.run([*command, str(changed), "clone"], cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1 and "checksum mismatch" in refused.stderr
    assert not (tmp_path / "clone" / "results").exists()
    restored = subprocess.run([*command, str(packed), "clone"], cwd=tmp_path, capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    assert "6 files verified against MANIFEST.sha256 and restored into clone/results" in restored.stdout


@pytest.mark.slow
def test_archive_rule_packs_the_run_and_a_restore_is_up_to_date(smoke_run, tmp_path):
    from conftest import copy_workflow

    run = Path(shutil.copytree(smoke_run, tmp_path / "run", symlinks=True))
    snakemake = [sys.executable, "-m", "snakemake", "--cores", "2"]
    result = subprocess.run(
        [*snakemake, "archive", "--configfile", SMOKE_CONFIG], cwd=run, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    packed = run / "results" / "featlearn-archive.tar.gz"
    assert "files verified" in (run / "logs" / "archive" / "archive.log").read_text()

    names = {name.removeprefix("results/") for name in members(packed)}
    produced = {path.relative_to(run / "results").as_posix() for path in (run / "results").rglob("*") if path.is_file()}
    for suffix in (".nc", ".png", ".pdf"):
        wanted = {name for name in produced if name.endswith(suffix)}
        assert wanted and wanted <= names, suffix
    assert {
        "config/given/smoke.yaml",
        "config/resolved.yaml",
        "provenance.json",
        "ro-crate-metadata.json",
        "MANIFEST.sha256",
    } <= names
    stages = json.loads(members(packed)["results/provenance.json"])["stages"]
    assert {"resolve_experiment", "simulate", "merge"} <= stages.keys()

    time.sleep(1)  # a fresh clone's files are newer than the archived outputs
    clone = copy_workflow(tmp_path / "clone")
    restore = subprocess.run(
        [sys.executable, "-m", "featlearn", "restore", str(packed)], cwd=clone, capture_output=True, text=True
    )
    assert restore.returncode == 0, restore.stderr
    plan = subprocess.run(
        [*snakemake, "-n", "--configfile", SMOKE_CONFIG], cwd=clone, capture_output=True, text=True, timeout=180
    )
    assert plan.returncode == 0, plan.stderr[-4000:]
    assert "Nothing to be done" in plan.stdout + plan.stderr, (plan.stdout + plan.stderr)[-4000:]
