"""Live access logic, in process: client JSON nested too deeply, the per-key cap on client secrets, and
which heartbeaten live jobs count as lost."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from asr_daemon.live import protocol, secrets
from asr_daemon.live.manager import lost_jobs


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, '{"a":' * 5000 + "1" + "}" * 5000, "{no"])
def test_json_nested_past_the_parser_is_invalid_json(text: str) -> None:
    """JSON nested thousands deep (RecursionError in the parser) is the client's `invalid_json`, as bad JSON is."""
    with pytest.raises(protocol.ProtocolError) as refused:
        protocol.loads(text)
    assert refused.value.code == "invalid_json" and "nested" in refused.value.message


def test_json_nested_a_little_still_parses() -> None:
    """Ordinary nesting (a session object, a few hundred levels) parses as before."""
    assert protocol.loads('{"type": "session.update", "session": {"audio": {"input": {}}}}')["type"] == "session.update"
    assert isinstance(protocol.loads("[" * 200 + "]" * 200), list)


def test_client_secrets_are_capped_per_key_and_never_evict_anothers() -> None:
    """A key at its cap is refused (SecretsFull, with when one expires); other keys and the anonymous bucket
    keep theirs and may still make new ones; an expired secret frees its room."""
    now = [1000.0]
    store = secrets.ClientSecrets(per_key=3, clock=lambda: now[0])
    victim, _ = store.create(None, "anonymous", False, 7200, None)
    mine = [store.create(7, "alice", False, 60 + i, None)[0] for i in range(3)]
    with pytest.raises(secrets.SecretsFull) as full:
        store.create(7, "alice", False, 60, None)
    assert full.value.retry_after == 60 and "3 unexpired client secrets" in str(full.value)
    for _ in range(2):  # the anonymous bucket has its own room
        store.create(None, "anonymous", False, 60, None)
    with pytest.raises(secrets.SecretsFull):
        store.create(None, "anonymous", False, 60, None)
    assert store.create(8, "bob", False, 60, None)[1].key_id == 8
    assert store.lookup(victim) is not None and all(store.lookup(v) is not None for v in mine)
    now[0] += 60.5  # alice's first secret expired
    assert store.lookup(mine[0]) is None
    assert store.create(7, "alice", False, 60, None)[1].key_id == 7
    assert store.lookup(victim) is not None


def test_forgetting_a_revoked_keys_secrets() -> None:
    """`forget_key` drops every secret of one key and frees its room; the others stay."""
    store = secrets.ClientSecrets(per_key=2)
    gone = [store.create(7, "alice", False, 600, None)[0] for _ in range(2)]
    kept, _ = store.create(8, "bob", False, 600, None)
    assert store.forget_key(7) == 2
    assert all(store.lookup(v) is None for v in gone) and store.lookup(kept) is not None
    store.create(7, "alice", False, 600, None)
    store.create(7, "alice", False, 600, None)


@dataclass
class Open:
    """What `lost_jobs` reads of a session."""

    job_id: uuid.UUID | None
    job_closed: bool = False


def test_a_job_its_session_finished_during_the_heartbeat_is_not_lost() -> None:
    """A job heartbeaten but not updated is lost only while its session is still open and has not finished
    it itself (the heartbeat raced the session's own close); a session gone meanwhile did so too."""
    racing, lost, gone, kept = (uuid.uuid4() for _ in range(4))
    sessions = [Open(racing, job_closed=True), Open(lost), Open(kept), Open(None)]
    assert lost_jobs([racing, lost, gone, kept], [kept], sessions) == [lost]
