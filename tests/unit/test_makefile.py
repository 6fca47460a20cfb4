"""The set-up commands keep their promises: quiet `uv run`, progress in `make test`, asrctl on PATH."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = (ROOT / "Makefile").read_text()


def _recipe(target: str) -> list[str]:
    lines = MAKEFILE.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"{target}:"))
    out = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("\t"):
            break
        out.append(ln.strip())
    return out


def test_bytecode_is_compiled_at_sync_time_only() -> None:
    """`uv run asrctl …` prints nothing of its own: bytecode is compiled by `make sync`, not by every
    `uv run` (uv's `compile-bytecode` setting or UV_COMPILE_BYTECODE made each one print "Bytecode compiled")."""
    uv = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]
    assert not uv.get("compile-bytecode")
    assert "UV_COMPILE_BYTECODE" not in MAKEFILE
    assert any("sync --locked --compile-bytecode" in ln for ln in _recipe("sync"))


def test_make_test_shows_progress_per_file() -> None:
    """`make test` runs pytest at its default verbosity (one line per file with a percentage), not `-q` dots."""
    for target in ("test", "test-fast"):
        (call,) = [ln for ln in _recipe(target) if "pytest" in ln]
        assert " -q" not in call, call


def test_run_puts_asrctl_on_path(tmp_path: Path) -> None:
    """`make run` depends on the shim; the shim runs this checkout's asrctl with its state directory,
    from any directory, is idempotent, and leaves an asrctl it did not write alone."""
    assert "shim" in MAKEFILE.split("\nrun:", 1)[1].splitlines()[0]
    bindir = tmp_path / "bin"
    env = {**os.environ, "ASR_SHIM_DIR": str(bindir), "ASR_USER_PATH": "/usr/bin:/bin"}
    env.pop("ASR_STATE_DIR", None)
    for _ in range(2):
        done = subprocess.run([ROOT / "scripts" / "link-asrctl"], env=env, capture_output=True, text=True, check=True)
    assert f'export PATH="{bindir}:$PATH"' in done.stderr
    shim = (bindir / "asrctl").read_text()
    assert f"ASR_STATE_DIR:={ROOT}/var/state" in shim and f'exec "{ROOT}/.venv/bin/asrctl"' in shim
    shown = subprocess.run(
        [bindir / "asrctl", "config", "show", "--json"],
        cwd=tmp_path,
        env={k: v for k, v in env.items() if not k.startswith("ASR_")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stderr == ""
    assert f'"{ROOT}/var/state"' in shown.stdout
    (bindir / "asrctl").write_text("#!/bin/sh\necho someone else's\n")
    subprocess.run([ROOT / "scripts" / "link-asrctl"], env=env, capture_output=True, check=True)
    assert (bindir / "asrctl").read_text() == "#!/bin/sh\necho someone else's\n"
