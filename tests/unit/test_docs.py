"""The README stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from asr_daemon.config import Settings
from asr_daemon.configdocs import field_docs, markdown_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_documents_every_setting() -> None:
    """Every ASR_* setting appears in the README's settings table."""
    missing = [f"ASR_{name.upper()}" for name in Settings.model_fields if f"`ASR_{name.upper()}`" not in README]
    assert not missing, f"README lacks {missing}: regenerate with asr_daemon.configdocs.markdown_table() (make readme)"


def test_readme_settings_table_is_current_and_one_row_per_setting() -> None:
    """The README's settings table is exactly what `make readme` renders, each setting on one row."""
    table = markdown_table()
    assert table in README, "README's settings table is stale: run `make readme`"
    rows = table.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields) and all(r.startswith("| `ASR_") for r in rows)


def test_every_setting_has_a_docstring() -> None:
    """Each settings field carries a description (shown by the README and `asrctl config show`)."""
    docs = field_docs()
    assert set(docs) == set(Settings.model_fields) and all(docs.values())


def test_readme_leads_with_the_two_commands() -> None:
    """`make run` and `make test` are on the README's first screen."""
    head = "\n".join(README.splitlines()[:20])
    assert "make run" in head and "make test" in head


def test_readme_layout_names_every_module_and_package() -> None:
    """The README's layout table names every module and sub-package of asr_daemon, and none that is gone."""
    layout = README.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    package = Path(__file__).resolve().parents[2] / "asr_daemon"
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    packages = {p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    missing = sorted(n for n in modules | packages if f"{n}`" not in layout)
    assert not missing, f"README's layout table lacks {missing}"
    named = set(re.findall(r"`(?:asr_daemon/)?(?:[\w/]+/)?(\w+\.py)`", layout))
    gone = sorted(named - {p.name for p in package.rglob("*.py")})
    assert not gone, f"README's layout table names modules that are gone: {gone}"
