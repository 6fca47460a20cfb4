"""The settings shown to people: each field's docstring, the README's table (`make readme`), and the
values with every secret masked (`asrctl config show`).

Kept apart from `asr_daemon.config` (the `Settings` fields themselves): only the CLI and the README
script read these, never the daemon.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from pydantic import SecretStr

from asr_daemon.config import Settings


def field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal under it), read from the source when asked.

    Pydantic's `use_attribute_docstrings` reads the same at class creation: 15 ms of every cold
    start, for text that only `asrctl config show` and the README's table use. Empty when the
    source is not installed (bytecode only), as pydantic's was.
    """
    try:
        source = inspect.getsource(Settings)
    except (OSError, TypeError):
        return {}
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef)  # getsource of a class: one class definition
    docs: dict[str, str] = {}
    for stmt, after in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def markdown_table() -> str:
    """The settings as a Markdown table (variable, default, meaning), as the README shows them."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    docs = field_docs()
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        meaning = " ".join(docs.get(name, "").split())  # a docstring over several lines: one row
        rows.append(f"| `ASR_{name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def masked(settings: Settings) -> dict[str, object]:
    """The settings as plain values with every secret replaced by `***` (for `config show`)."""
    out: dict[str, object] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = mask_url(value.get_secret_value())
        elif isinstance(value, Path):
            value = str(value)
        out[name] = value
    return out


def mask_url(secret: str) -> str:
    """Hide the password of a URL (`scheme://user:***@host`), or the whole value if it is not one."""
    if "://" not in secret:
        return "***"
    scheme, rest = secret.split("://", 1)
    if "@" in rest:
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return secret
