"""`asrctl keys revoke` run as an operator runs it (a subprocess) against a real PostgreSQL: one key or none."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from asr_daemon import keys


def asrctl(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `asrctl ARGS` in a subprocess against `database`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASR_")}
    return subprocess.run(
        [sys.executable, "-m", "asr_daemon.cli", *args],
        check=False,
        env={**env, "ASR_DATABASE_URL": database},
        capture_output=True,
        text=True,
        timeout=60,
    )


def create(database: str, name: str, *extra: str) -> dict[str, object]:
    """`asrctl keys create --json`: the key as stored, with its token."""
    out = asrctl(database, "keys", "create", "--name", name, "--json", *extra)
    assert out.returncode == 0, out.stderr
    created: dict[str, object] = json.loads(out.stdout)
    return created


def active(database: str) -> list[str]:
    """Names of the keys not revoked, by id."""
    return [k["name"] for k in json.loads(asrctl(database, "keys", "ls", "--json").stdout)]


def test_a_reference_naming_two_keys_revokes_nothing_and_lists_them(database: str) -> None:
    """An admin key's id that is another key's name: exit 2, both keys named with id, name and prefix, none
    revoked; `--id N` then revokes exactly that key, and the name alone the other."""
    admin = create(database, "ops-admin", "--admin")
    named = create(database, str(admin["id"]))  # e.g. a build number
    refused = asrctl(database, "keys", "revoke", str(admin["id"]))
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("asrctl: error: "), refused.stderr
    for key in (admin, named):
        assert f"id {key['id']} name {key['name']!r} prefix {key['prefix']}" in lines[0], lines[0]
    assert "--id" in lines[0] and "nothing revoked" in lines[0]
    assert active(database) == ["ops-admin", str(admin["id"])], "an ambiguous reference revoked a key"

    by_id = asrctl(database, "keys", "revoke", "--id", str(admin["id"]))
    assert by_id.returncode == 0 and by_id.stdout.strip() == f"revoked key {admin['id']} 'ops-admin'"
    assert active(database) == [str(admin["id"])]
    by_name = asrctl(database, "keys", "revoke", str(admin["id"]))  # now only the key of that name
    assert by_name.returncode == 0 and by_name.stdout.strip() == f"revoked key {named['id']} {str(admin['id'])!r}"
    assert active(database) == []


def test_revoke_by_prefix_or_token_takes_one_key_and_bad_references_are_refused(database: str) -> None:
    """The shown prefix and the token each revoke their key only; neither REF nor --id, or both: exit 2;
    an id or a name that matches no active key: exit 1; every refusal is one line and revokes nothing."""
    first, second = create(database, "first"), create(database, "second")
    assert asrctl(database, "keys", "revoke", str(first["prefix"])).returncode == 0
    assert active(database) == ["second"]
    assert asrctl(database, "keys", "revoke", str(second["token"])).returncode == 0
    assert active(database) == []
    create(database, "third")
    for args, code, fragment in [
        ((), 2, "name the key"),
        (("third", "--id", "3"), 2, "not both"),
        (("--id", "999999"), 1, "no active key matches id 999999"),
        (("first",), 1, "no active key matches 'first'"),  # revoked already
        (("asr_",), 1, "no active key matches"),  # a prefix under 8 characters names nothing
    ]:
        out = asrctl(database, "keys", "revoke", *args)
        assert out.returncode == code, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and fragment in out.stderr, (args, out.stderr)
    assert active(database) == ["third"]
    assert keys.SHOWN_PREFIX >= 8  # so a prefix as `keys ls` shows it is long enough to name a key
