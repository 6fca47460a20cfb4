"""A keyless daemon refuses other web sites' browsers (DNS rebinding, cross-site POSTs and WebSockets),
and nothing else (asr_daemon/api/sameorigin.py)."""

from __future__ import annotations

import pytest

from asr_daemon.api import sameorigin
from asr_daemon.config import Settings


@pytest.mark.parametrize(
    ("host", "name"),
    [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"), ("LocalHost", "localhost"), ("asr.lan:80", "asr.lan")],
)
def test_host_names_lose_their_port(host: str, name: str) -> None:
    """The name of a Host header is compared without its port, in lower case, IPv6 without brackets."""
    assert sameorigin.hostname(host) == name


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8765", True),
        ("[::1]:8765", True),
        ("192.168.1.20:8765", True),  # an address: no rebinding page can have it
        ("localhost:8765", True),
        ("asr.localhost", True),
        ("attacker.example", False),
        ("127.0.0.1.nip.io", False),
        ("asr.lan", True),  # listed below
    ],
)
def test_only_addresses_localhost_and_listed_names_are_hosts(host: str, ok: bool) -> None:
    """A Host is this server's when it is an IP address, localhost or a listed name; any other name is refused."""
    assert sameorigin.host_allowed(host, frozenset({"asr.lan"})) is ok


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        ("http://127.0.0.1:8765", "127.0.0.1:8765", [], True),
        ("https://asr.lan", "asr.lan", [], True),  # a TLS proxy in front
        ("http://127.0.0.1:3000", "127.0.0.1:8765", [], False),  # another local web app
        ("http://evil.example", "127.0.0.1:8765", [], False),
        ("null", "127.0.0.1:8765", [], False),
        ("http://localhost:5173", "127.0.0.1:8765", ["http://localhost:5173"], True),
        ("http://anything.example", "127.0.0.1:8765", ["*"], True),
    ],
)
def test_an_origin_is_the_servers_own_or_listed(origin: str, host: str, allowed: list[str], ok: bool) -> None:
    """A page may use the server when it came from it (same host and port) or from an ASR_CORS_ORIGINS entry."""
    assert sameorigin.origin_allowed(origin, host, allowed) is ok


def scope(kind: str = "http", method: str = "POST") -> dict[str, object]:
    """An ASGI scope of the given kind and method."""
    return {"type": kind, "method": method, "path": "/v1/models/base/load"}


def test_keyless_daemons_refuse_foreign_hosts_and_foreign_pages_changes() -> None:
    """Keyless: a foreign Host is refused for any request; a foreign Origin for POSTs and WebSockets, not GETs;
    programs (no Origin) and the page itself pass."""
    keyless = Settings(auth="auto", host="127.0.0.1")
    here = "127.0.0.1:8765"
    assert "ASR_ALLOWED_HOSTS" in (sameorigin.refusal(scope(method="GET"), "attacker.example", None, keyless) or "")
    why = sameorigin.refusal(scope(), here, "http://evil.example", keyless)
    assert why is not None and "ASR_CORS_ORIGINS" in why
    assert sameorigin.refusal(scope("websocket"), here, "http://evil.example", keyless) is not None
    assert sameorigin.refusal(scope(method="GET"), here, "http://evil.example", keyless) is None
    assert sameorigin.refusal(scope(), here, None, keyless) is None
    assert sameorigin.refusal(scope(), here, f"http://{here}", keyless) is None
    assert sameorigin.refusal(scope(), "", None, keyless) is None  # HTTP/1.0 without Host: not a browser
    listed = Settings(auth="auto", host="127.0.0.1", allowed_hosts="asr.lan, box.local")
    assert sameorigin.refusal(scope(), "box.local:8765", "http://box.local:8765", listed) is None


def test_with_keys_the_key_is_the_protection() -> None:
    """A daemon requiring keys refuses nothing here (a foreign page cannot know a key)."""
    keyed = Settings(auth="on")
    assert sameorigin.refusal(scope(), "attacker.example", "http://evil.example", keyed) is None
    assert sameorigin.refusal(scope("lifespan"), "", None, Settings()) is None


def test_allowed_hosts_setting_takes_names_only() -> None:
    """ASR_ALLOWED_HOSTS is a list of host names; anything else is refused when settings are built."""
    assert Settings(allowed_hosts="asr.lan,box.local").allowed_hosts == "asr.lan,box.local"
    with pytest.raises(ValueError, match="allowed_hosts"):
        Settings(allowed_hosts="http://asr.lan/")
