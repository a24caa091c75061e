"""Optuna's RDB storage, opened with heartbeats and retries, and with one-line errors.

:func:`open_storage` is what every worker of :mod:`.queue` uses: an SQLite
file (one machine) or a PostgreSQL server (several), with the heartbeat
interval and grace period after which a job's worker counts as dead.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EffnetError
from ..io_utils import first_line
from .workers import quiet_optuna

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

HEARTBEAT_S = 30        # a running job's worker writes a heartbeat this often (seconds)...
GRACE_S = 120           # ...and counts as dead after this long without one
MAX_RETRY = 3           # a job whose worker died is queued again at most this often
CONNECT_TIMEOUT_S = 10  # PostgreSQL: give up on a server that does not answer


def storage_url(text: str) -> str:
    """An RDB URL from `text`; a plain file path means an SQLite file (made absolute)."""
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _driver_url(url: str) -> str:
    """Use an installed PostgreSQL driver (SQLAlchemy 2.1 defaults to psycopg 3, not psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            import importlib.util

            if importlib.util.find_spec("psycopg") is None \
                    and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def _server(url: str) -> str:
    """'host:port/db' of a database URL, without the password (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"
    except Exception:  # a URL SQLAlchemy cannot parse: the error comes from RDBStorage
        return url.split("@")[-1]


def _check_sqlite(url: str, must_exist: bool) -> None:
    """Refuse a missing (when it must exist) or non-SQLite file with a one-line error."""
    path = Path(url[len("sqlite:///"):])
    if must_exist and not path.exists():
        raise EffnetError(f"no search database at {path}: run `effnet search --storage "
                          f"sqlite:///{path}` first (or give the right path)")
    if not path.parent.is_dir():
        raise EffnetError(f"folder {path.parent} does not exist: create it or pick another "
                          "--storage path")
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            head = f.read(16)
        if head != b"SQLite format 3\x00":  # the header every SQLite 3 database starts with
            raise EffnetError(f"{path} is not an SQLite database: give the path of a search "
                              "database, or a new file name to start one")


def _reason(err: BaseException) -> str:
    """The first line of a database error (SQLAlchemy keeps the driver's own in `.orig`)."""
    return first_line(getattr(err, "orig", None) or err)


def open_storage(url: str, must_exist: bool = False, *, heartbeat_interval: int = HEARTBEAT_S,
                 grace_period: int = GRACE_S, max_retry: int | None = MAX_RETRY,
                 connect_timeout: int = CONNECT_TIMEOUT_S) -> RDBStorage:
    """An Optuna RDBStorage with heartbeats and retries of jobs whose worker died.

    `url` is an RDB URL or an SQLite file path. A job's worker writes a
    heartbeat every `heartbeat_interval` seconds; a job without one for
    `grace_period` seconds is failed by the next live worker and queued again
    (at most `max_retry` times; None: always). A PostgreSQL server that does
    not answer within `connect_timeout` seconds, or a file that is not an
    SQLite database, gives a one-line :class:`EffnetError`.
    """
    import optuna
    import sqlalchemy.exc as sa_exc

    url = storage_url(url)
    if url.startswith("sqlite:///"):
        _check_sqlite(url, must_exist)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    elif url.startswith(("postgresql", "postgres://")):
        engine_kwargs = {"pool_pre_ping": True,
                         "connect_args": {"connect_timeout": int(connect_timeout)}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(6):
        try:
            with quiet_optuna():
                # Optuna 4.9 renamed RetryFailedTrialCallback / failed_trial_callback (now
                # deprecated aliases) to RetryHeartbeatStaleTrialCallback / this argument.
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                return optuna.storages.RDBStorage(
                    _driver_url(url), engine_kwargs=engine_kwargs,
                    heartbeat_interval=int(heartbeat_interval), grace_period=int(grace_period),
                    heartbeat_stale_trial_callback=retry)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as err:
            last = err  # two workers creating the tables at the same moment: try again
        except sa_exc.OperationalError as err:
            # SQLite busy, or two workers creating the tables at once: try again. Anything
            # else (no server, refused, timed out, wrong password) is final.
            if not any(s in str(err) for s in ("locked", "already exists")):
                raise _unreachable(url, err, connect_timeout) from None
            last = err
        except sa_exc.DatabaseError as err:
            raise EffnetError(f"{url} is not a usable Optuna database ({_reason(err)}): "
                              "give another --storage") from None
        except (ValueError, ImportError, sa_exc.ArgumentError) as err:
            raise EffnetError(f"cannot use storage {url!r} ({_reason(err)}): give "
                              "sqlite:///FILE or postgresql://USER@HOST:PORT/DB") from None
        time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise EffnetError(f"cannot open storage {url!r} ({_reason(last) if last else '?'}): "
                      "check the URL and that the database server is running")


def _unreachable(url: str, err: Exception, timeout: int) -> EffnetError:
    msg = _reason(err)
    if url.startswith("sqlite"):
        return EffnetError(f"cannot open {url} ({msg}): check the path and its permissions")
    if "timeout" in msg.lower():
        msg = f"no answer within {timeout} s"
    return EffnetError(f"database server {_server(url)} did not answer ({msg}): check that it "
                       "is running and reachable, and the URL's user and database")
