"""A PostgreSQL server for the shared-storage tests: the CI one, or a throwaway local one."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """$EFFNET_TEST_POSTGRES_URL (set by .ci/postgres.sh), or a throwaway local server."""
    url = os.environ.get("EFFNET_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = bins[-1] if bins else shutil.which("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL is not installed: run .ci/postgres.sh (it apt-get installs "
                    "postgresql) or set EFFNET_TEST_POSTGRES_URL")
    bindir = Path(initdb).parent
    root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="effnet-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if root else []
    if root:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust",
                        "-U", "postgres", "-N"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l",
                        str(data / "log"), "-w", "-o",
                        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "start"], check=True, capture_output=True)
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE effnet")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/effnet"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)
