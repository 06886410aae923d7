"""The instance on Postgres (what more than one machine needs, docs/DEPLOY.md): a throwaway
PostgreSQL server on 127.0.0.1, the Dagster instance's runs, event log and schedules in it, and two
Celery workers that open that instance from the steps they are sent, as workers on other machines do."""
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from agedistill_dag.cluster import Cluster, free_port, group_members, redis_server_binary, steps_by_worker
from agedistill_dag.materialize import materialize_all
from agedistill_testing import write_params

pytestmark = [pytest.mark.cluster, pytest.mark.xdist_group("cluster")]   # (--dist loadgroup: one worker)

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _pg_tool(name: str) -> str | None:
    return shutil.which(name) or (str(PG_BIN / name) if (PG_BIN / name).exists() else None)


@pytest.fixture
def postgres():
    """A PostgreSQL server in a temporary folder (run as user `postgres` when we are root, since
    postgres refuses root); yields its port; stopped by process group id."""
    initdb, server = _pg_tool("initdb"), _pg_tool("postgres")
    if not initdb or not server:
        pytest.skip("PostgreSQL cannot start: no initdb/postgres binaries (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="agedistill-pg-"))
    if os.geteuid() == 0:
        try:
            import pwd
            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("PostgreSQL cannot start: running as root and there is no `postgres` user to run it as")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "dagster"], check=True,
                   capture_output=True)
    port = free_port()
    proc = subprocess.Popen([*as_user, server, "-D", str(data), "-k", str(folder), "-h", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        import psycopg2
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="dagster", dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield port
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_runs_and_events_on_postgres_through_two_workers(tmp_path, postgres):
    try:
        redis_server_binary()
    except Exception as exc:
        pytest.skip(f"Redis cannot start: {exc}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\nstorage:\n  postgres:\n    postgres_db:\n      username: dagster\n"
        f"      hostname: 127.0.0.1\n      db_name: postgres\n      port: {postgres}\n"
        # SQLAlchemy 2.1's default postgresql driver is psycopg 3; dagster-postgres installs psycopg2
        "      scheme: postgresql+psycopg2\n")
    params = write_params(tmp_path, {"pg": {
        "workdir": str(tmp_path / "work"), "shard_size": 10,
        "dataset": {"name": "demo", "root": str(tmp_path / "raw"), "limit": 20},
        "teacher": {"variants": 1, "threads": 1}}})
    cluster = Cluster(home, logdir=tmp_path / "logs", env={"OMP_NUM_THREADS": "1"})
    with cluster, dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        done = materialize_all("pg", str(params), instance=instance, jobs=2, executor="celery",
                               run_config=cluster.run_config(),
                               assets=["face_manifest", "face_crops", "teacher_soft_labels"])
        ran = steps_by_worker(instance, done.run_ids)
        assert done.success and len(done.runs) == 1 + 2
        assert set(ran) == set(cluster.worker_names())
        # what the workers wrote is in Postgres: a fresh instance object reads it back
        with dg.DagsterInstance.from_config(str(home)) as again:
            assert {r.run_id for r in again.get_runs()} == set(done.run_ids)
            assert again.get_materialized_partitions(dg.AssetKey(["pg", "teacher_soft_labels"])) == {
                "shard-00000", "shard-00001"}
            assert again.get_dynamic_partitions("shards_pg") == ["shard-00000", "shard-00001"]
    assert cluster.alive() == [] and all(group_members(p.pid) == [] for p in cluster.procs.values())
