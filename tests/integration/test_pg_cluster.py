"""The installer's and `make run`'s PostgreSQL set-up against real clusters on ports other than 5432.

Two throwaway clusters (tests/services.py: random ports, sockets in their own temporary directories)
are registered with Debian's postgresql-common through PG_CLUSTER_CONF_ROOT, the variable its tools
read instead of /etc/postgresql: so the real pg_lsclusters lists them and the real pg_wrapper chooses
among them (the only cluster, PGCLUSTER, --cluster) exactly as on a host whose cluster is not on 5432.
scripts/pg-cluster, scripts/install-database (the installer's database step) and scripts/dev-services
run for real, as root, through runuser to `postgres`; the DSNs they write are then used by `asrctl`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (shutil.which("pg_lsclusters") and shutil.which("runuser") and os.geteuid() == 0),
    reason="needs Debian's postgresql-common and root (runuser to postgres), as the installer does",
)


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, services.Postgres]]:
    """Two running throwaway clusters, `a` and `b`, neither on 5432."""
    with services.postgres() as a, services.postgres() as b:
        yield {"a": a, "b": b}


@contextlib.contextmanager
def conf_root(*registered: tuple[str, services.Postgres]) -> Iterator[Path]:
    """A postgresql-common configuration root listing these clusters as VERSION/NAME."""
    root = Path(tempfile.mkdtemp(prefix="asr-pgconf-"))
    version = services.pg_bindir().parent.name
    try:
        for name, pg in registered:
            d = root / version / name
            d.mkdir(parents=True)
            (d / "postgresql.conf").write_text(
                f"port = {pg.port}\ndata_directory = '{pg.datadir}'\nunix_socket_directories = '{pg.root}'\n"
            )
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)  # pg_wrapper reads it as postgres
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def version() -> str:
    """The PostgreSQL major version the throwaway clusters run."""
    return services.pg_bindir().parent.name


def dsn(pg: services.Postgres, db: str = "asr") -> str:
    """The DSN the scripts write for a cluster that is not on the default socket and port."""
    return f"postgresql:///{db}?host={pg.root}&port={pg.port}"


def run(argv: list[str], conf: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a script with the clusters of `conf` as the host's clusters, and no PG* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ASR_"))}
    return subprocess.run(
        argv,
        env={**base, "PG_CLUSTER_CONF_ROOT": str(conf), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def migrate(url: str, user: str = "asr") -> subprocess.CompletedProcess[str]:
    """`asrctl db migrate` with this DSN, connecting as `user` (the daemon runs as `asr`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "ASR_"))}
    return subprocess.run(
        [str(ROOT / ".venv/bin/asrctl"), "db", "migrate"],
        env={**env, "ASR_DATABASE_URL": url, "PGUSER": user},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def sourced(env_file: Path) -> str:
    """ASR_DATABASE_URL as sh sees it after sourcing the file (as the backup cron job does)."""
    out = subprocess.run(
        ["sh", "-c", 'set -a; . "$1"; printf %s "$ASR_DATABASE_URL"', "sh", str(env_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_pg_cluster_finds_the_only_cluster_on_its_own_port(clusters: dict[str, services.Postgres]) -> None:
    """The only cluster, on a random port: the DSN names its socket directory and port, and reaches it."""
    a = clusters["a"]
    with conf_root(("main", a)) as conf:
        r = run([str(ROOT / "scripts/pg-cluster"), "--owner", "asr", "asr"], conf)
    assert r.returncode == 0, r.stderr
    assert r.stdout == dsn(a) + "\n"
    assert f"using PostgreSQL {version()}/main" in r.stderr and f"port {a.port}" in r.stderr
    assert a.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'asr'") == "asr"
    done = migrate(dsn(a))
    assert done.returncode == 0, done.stderr


def test_install_rewrites_the_default_url_to_the_cluster_it_set_up(
    clusters: dict[str, services.Postgres], tmp_path: Path
) -> None:
    """An env file with the old default URL: that line becomes the cluster's DSN, quoted; no other changes."""
    a = clusters["a"]
    env_file = tmp_path / "asr-server.env"
    env_file.write_text("# settings\nASR_DATABASE_URL=postgresql:///asr\nASR_MODEL=tiny.en\n")
    with conf_root(("main", a)) as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file)], conf)
    assert r.returncode == 0, r.stderr
    assert env_file.read_text() == f"# settings\nASR_DATABASE_URL='{dsn(a)}'\nASR_MODEL=tiny.en\n"
    assert sourced(env_file) == dsn(a)
    assert migrate(sourced(env_file)).returncode == 0


def test_install_appends_the_url_when_the_env_file_has_none(
    clusters: dict[str, services.Postgres], tmp_path: Path
) -> None:
    """An operator's env file without ASR_DATABASE_URL: kept byte for byte, the DSN appended after it."""
    a = clusters["a"]
    env_file = tmp_path / "asr-server.env"
    before = "ASR_MODEL=tiny.en\nASR_WORKERS=1"  # no newline at the end
    env_file.write_text(before)
    with conf_root(("main", a)) as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file)], conf)
    assert r.returncode == 0, r.stderr
    text = env_file.read_text()
    assert text.startswith(before + "\n") and text.endswith(f"\nASR_DATABASE_URL='{dsn(a)}'\n")
    assert sourced(env_file) == dsn(a)


def test_install_keeps_the_cluster_an_earlier_install_chose(
    clusters: dict[str, services.Postgres], tmp_path: Path
) -> None:
    """The env file names cluster b; psql's default is now a: the file is unchanged and b gets the database."""
    a, b = clusters["a"], clusters["b"]
    b.psql("DROP DATABASE IF EXISTS asr")
    env_file = tmp_path / "asr-server.env"
    env_file.write_text(f"ASR_DATABASE_URL='{dsn(b)}'\n")
    with conf_root(("main", a)) as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file)], conf)
    assert r.returncode == 0, r.stderr
    assert env_file.read_text() == f"ASR_DATABASE_URL='{dsn(b)}'\n"
    assert b.psql("SELECT count(*) FROM pg_database WHERE datname = 'asr'") == "1"
    assert f"port {b.port}" in r.stderr


def test_install_leaves_an_operators_own_url_alone(clusters: dict[str, services.Postgres], tmp_path: Path) -> None:
    """A URL of the operator's own (a remote server, a password): unchanged, nothing created anywhere."""
    env_file = tmp_path / "asr-server.env"
    own = "ASR_DATABASE_URL=postgresql://asr:s3cret@db.internal:6432/speech\n"
    env_file.write_text(own)
    with conf_root(("main", clusters["a"])) as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file)], conf)
    assert r.returncode == 0, r.stderr
    assert env_file.read_text() == own and r.stdout + r.stderr == ""


def test_with_several_clusters_and_none_on_5432_the_installer_says_how_to_choose(
    clusters: dict[str, services.Postgres], tmp_path: Path
) -> None:
    """Two clusters, no default: a warning that lists both and names --pg-cluster; --pg-cluster then picks one."""
    a, b = clusters["a"], clusters["b"]
    env_file = tmp_path / "asr-server.env"
    env_file.write_text("ASR_DATABASE_URL=postgresql:///asr\n")
    v = version()
    with conf_root(("main", a), ("spare", b)) as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file)], conf)
        assert r.returncode == 0, r.stderr  # the migration after it fails, with its own message
        assert f"{v}/main (port {a.port}, online), {v}/spare (port {b.port}, online)" in r.stderr
        assert "scripts/install --pg-cluster VERSION/NAME" in r.stderr
        assert env_file.read_text() == "ASR_DATABASE_URL=postgresql:///asr\n"

        r = run([str(ROOT / "scripts/install-database"), str(env_file), "--pg-cluster", f"{v}/spare"], conf)
    assert r.returncode == 0, r.stderr
    assert env_file.read_text() == f"ASR_DATABASE_URL='{dsn(b)}'\n"
    assert f"using PostgreSQL {v}/spare (asked for)" in r.stderr
    assert f"the clusters here: {v}/main (port {a.port}, online), {v}/spare" in r.stderr
    assert migrate(dsn(b)).returncode == 0


def test_install_rejects_a_cluster_that_does_not_exist(clusters: dict[str, services.Postgres], tmp_path: Path) -> None:
    """--pg-cluster with a wrong name: exit 1 naming the clusters there are; the env file unchanged."""
    env_file = tmp_path / "asr-server.env"
    env_file.write_text("ASR_DATABASE_URL=postgresql:///asr\n")
    with conf_root(("main", clusters["a"])) as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file), "--pg-cluster", "99/nope"], conf)
    assert r.returncode == 1
    assert "no cluster 99/nope; the clusters here: " in r.stderr and f"port {clusters['a'].port}" in r.stderr
    assert env_file.read_text() == "ASR_DATABASE_URL=postgresql:///asr\n"


def test_dev_services_hands_make_run_the_dsn_of_the_cluster(
    clusters: dict[str, services.Postgres], tmp_path: Path
) -> None:
    """`make run`'s set-up on a cluster off 5432: the database for the current user, and an env file
    whose ASR_DATABASE_URL reaches it (as `make run` sources it)."""
    a = clusters["a"]
    env_file = tmp_path / "dev-services.env"
    with conf_root(("main", a)) as conf:
        r = run(
            [str(ROOT / "scripts/dev-services")],
            conf,
            ASR_REDIS_URL="redis://127.0.0.1:1/0",  # Redis is not what this test is about
            ASR_DEV_DB="asr_dev",
            ASR_DEV_ENV_FILE=str(env_file),
        )
    assert r.returncode == 0, r.stderr
    assert f"export ASR_DATABASE_URL='{dsn(a, 'asr_dev')}'\n" in env_file.read_text()
    assert "for asrctl run by hand" in r.stderr
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    assert a.psql(f"SELECT rolcreatedb FROM pg_roles WHERE rolname = '{me}'") == "t"
    done = migrate(sourced(env_file), user=me)
    assert done.returncode == 0, done.stderr


def test_dev_services_leaves_a_users_own_database_alone(tmp_path: Path) -> None:
    """ASR_DATABASE_URL set by the user: the env file for `make run` sets nothing, so the user's value stays."""
    env_file = tmp_path / "dev-services.env"
    r = subprocess.run(
        [str(ROOT / "scripts/dev-services")],
        env={
            **os.environ,
            "ASR_DATABASE_URL": "postgresql:///mine",
            "ASR_REDIS_URL": "redis://127.0.0.1:1/0",
            "ASR_DEV_ENV_FILE": str(env_file),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "ASR_DATABASE_URL" not in "".join(ln for ln in env_file.read_text().splitlines() if not ln.startswith("#"))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://asr:Sup3rS3cret@db.internal:6432/speech", "postgresql://asr:***@db.internal:6432/speech"),
        ("postgresql://asr:Sup3r@S3cret@db.internal/speech", "postgresql://asr:***@db.internal/speech"),
        ("postgresql://asr@db.internal/speech?password=Sup3rS3cret&sslmode=require",
         "postgresql://asr@db.internal/speech?password=***&sslmode=require"),
        ("host=db.internal password=Sup3rS3cret dbname=speech", "***"),
    ],
)  # fmt: skip
def test_install_masks_the_password_of_the_url_it_writes(tmp_path: Path, url: str, shown: str) -> None:
    """--database-url with a password: the env file gets it, the output shows it masked as `config show` does."""
    env_file = tmp_path / "asr-server.env"
    env_file.write_text("ASR_DATABASE_URL=postgresql:///asr\n")
    with conf_root() as conf:
        r = run([str(ROOT / "scripts/install-database"), str(env_file), "--database-url", url], conf)
    assert r.returncode == 0, r.stderr
    assert env_file.read_text() == f"ASR_DATABASE_URL='{url}'\n"
    assert "Sup3r" not in r.stdout + r.stderr
    assert f"install: ASR_DATABASE_URL={shown} in {env_file}" in r.stdout
