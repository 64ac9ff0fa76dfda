"""A team's MLflow tracking server: PostgreSQL as backend store, artifacts proxied.

    python scripts/tracking_server.py /srv/pcdarts-mlflow            # make tracking-server DIR=...
    python scripts/tracking_server.py /srv/pcdarts-mlflow --host 0.0.0.0 --port 5000

Starts Debian's PostgreSQL on loopback (``127.0.0.1:--pg-port``) with its data in
``<folder>/postgres`` (created on the first start: a role and a database ``mlflow``, the
role's password in ``<folder>/pg_password``, readable by its owner only), then ``mlflow
server`` on that backend store with ``--artifacts-destination <folder>/artifacts``: clients
upload and download artifacts through the server, so no machine needs a shared file
system. Runs in the foreground; SIGINT or SIGTERM stops MLflow, then PostgreSQL (also while
they start). With ``--backend-store-uri postgresql://...`` it uses a PostgreSQL of your own
instead and starts none. Every machine then logs there with
``MLFLOW_TRACKING_URI=http://<server>:<port>`` (docs/team-server.md); a name for the server
other than its own host names or a private IP address goes in ``--allowed-hosts``. Each
problem is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

DATABASE = ROLE = "mlflow"
DEFAULT_PORT = 5000  # MLflow's own default
DEFAULT_PG_PORT = 5433  # beside a system PostgreSQL on 5432
DEFAULT_WORKERS = 2  # uvicorn workers of the server; MLflow's default is 4
PG_START_TIMEOUT_S = 60  # pg_ctl -w: a first start creates the cluster's files
SERVER_START_TIMEOUT_S = 180  # MLflow creates its tables on a fresh database: ~1 min on 2 cores
PG_CONNECT_TIMEOUT_S = 5  # a PostgreSQL that does not answer in this time is taken as down
STOP_TIMEOUT_S = 30  # what MLflow's workers get to finish requests on SIGTERM
POSTGRES_USER = "postgres"  # Debian's system user: PostgreSQL refuses to run as root


class ServerError(Exception):
    """A problem the user can fix; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return serve(args, StopRequest())
    except ServerError as error:
        print(f"tracking server: {error}", file=sys.stderr)
        return 1
    except StoppedWhileStarting:
        print("tracking server: stopped while starting; nothing left running", file=sys.stderr)
        return 1


class StoppedWhileStarting(Exception):
    """SIGINT or SIGTERM came before the server was up."""


class StopRequest:
    """Set by SIGINT or SIGTERM. Start-up checks it between steps (``check``): a step's
    programs (initdb, pg_ctl, in sessions of their own) finish, then what has started stops."""

    def __init__(self) -> None:
        self.requested = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise StoppedWhileStarting


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="PostgreSQL data, artifacts, logs")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--pg-port", type=int, default=DEFAULT_PG_PORT)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument(
        "--allowed-hosts",
        default="",
        help="names the team reaches this server by (comma-separated; this machine's own"
        " names, localhost and private IP addresses are always allowed)",
    )
    parser.add_argument(
        "--backend-store-uri", default="", help="postgresql://... of your own (none started)"
    )
    return parser


def serve(args: argparse.Namespace, stop: StopRequest) -> int:
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    postgres = None if args.backend_store_uri else Postgres(folder, args.pg_port)
    try:
        uri = args.backend_store_uri or (postgres.start(stop.check) if postgres else "")
        check_postgres(uri)
        stop.check()
        server = start_mlflow(uri, folder, args, stop.check)
        return wait(server, folder / "mlflow-server.log", stop)
    finally:
        if postgres is not None:
            postgres.stop()


class Postgres:
    """Debian's PostgreSQL on 127.0.0.1, data in ``<folder>/postgres``."""

    def __init__(self, folder: Path, port: int) -> None:
        self.bin = _postgres_bin()
        self.data = folder / "postgres"
        self.run_dir = folder / "postgres-run"  # its socket and log
        self.password_file = folder / "pg_password"
        self.port = port
        self.as_root = os.geteuid() == 0
        self.started = False

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        return ["runuser", "-u", POSTGRES_USER, "--", *command] if self.as_root else command

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """``tool`` to its end: in a session of its own, so that Ctrl-C reaches only this
        script, which stops what has started once the step is done."""
        command = self._command(tool, *args)
        return subprocess.run(command, capture_output=True, text=True, start_new_session=True)

    @staticmethod
    def _postgres_user_can_write(*folders: Path) -> bool:
        """Whether the postgres user may enter and write ``folders`` (every parent too)."""
        tests = [f"test -w {shlex.quote(str(f))} -a -x {shlex.quote(str(f))}" for f in folders]
        command = ["runuser", "-u", POSTGRES_USER, "--", "sh", "-c", " && ".join(tests)]
        return subprocess.run(command, capture_output=True).returncode == 0

    def start(self, check_stop: Callable[[], None]) -> str:
        """Create the cluster if new, start it; the backend store URI (password in env).
        ``check_stop`` raises between the steps when a stop was requested."""
        for folder in (self.data, self.run_dir):
            folder.mkdir(mode=0o700, exist_ok=True)
            if self.as_root:
                shutil.chown(folder, POSTGRES_USER, POSTGRES_USER)
        if self.as_root and not self._postgres_user_can_write(self.data, self.run_dir):
            raise ServerError(
                f"the {POSTGRES_USER} user cannot reach {self.data} (PostgreSQL refuses to run"
                " as root, so it runs as that user): give it a folder whose every parent others"
                " may enter (chmod o+x), or run this as another user"
            )
        if not (self.data / "PG_VERSION").is_file():
            self._init()
        check_stop()
        password = self.password_file.read_text().strip()
        log = self.run_dir / "postgres.log"
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.run_dir}"
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options,
            "-w", "-t", str(PG_START_TIMEOUT_S), "start",
        )  # fmt: skip
        if done.returncode != 0:
            raise ServerError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} ({_last_line(log)});"
                f" see {log}, or choose another --pg-port"
            )
        self.started = True
        check_stop()
        os.environ["PGPASSWORD"] = password  # libpq's: not on any command line
        _create_database(self.port, self.password_file)
        return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def _init(self) -> None:
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password + "\n")
        self.password_file.chmod(0o600)
        pwfile = self.run_dir / "initdb-password"
        pwfile.write_text(password + "\n")
        if self.as_root:
            shutil.chown(pwfile, POSTGRES_USER, POSTGRES_USER)
        try:
            done = self._run(
                "initdb", "-D", str(self.data), "-U", ROLE, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8",
            )  # fmt: skip
        finally:
            pwfile.unlink()
        if done.returncode != 0:
            problem = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServerError(f"initdb {self.data} failed: {problem}")

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started = False


def _postgres_bin() -> Path:
    """The folder of PostgreSQL's programs: on PATH, else Debian's newest version."""
    if found := shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if not versions:
        raise ServerError(
            "PostgreSQL is not installed (no pg_ctl on PATH or in /usr/lib/postgresql/):"
            " apt-get install postgresql, or give --backend-store-uri of your own"
        )
    return Path(versions[-1]).parent


def _version_key(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def _create_database(port: int, password_file: Path) -> None:
    import psycopg2

    try:
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user=ROLE, dbname="postgres",
            connect_timeout=PG_CONNECT_TIMEOUT_S,
        )  # fmt: skip
    except psycopg2.OperationalError as error:
        first = (str(error).strip().splitlines() or ["no answer"])[0]
        raise ServerError(
            f"cannot log in to PostgreSQL on 127.0.0.1:{port} as {ROLE} ({first}): the password"
            f" in {password_file} must be the role's, as initdb set it"
        ) from None
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:  # not `with connection`: that opens a transaction block even in autocommit
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        connection.close()


def check_postgres(uri: str) -> None:
    """One line (ServerError) when the backend store at ``uri`` does not answer."""
    import psycopg2

    parts = urllib.parse.urlsplit(uri)
    if not parts.scheme.startswith("postgresql"):
        raise ServerError(f"--backend-store-uri {uri!r} is not a postgresql:// URI")
    try:
        psycopg2.connect(
            host=parts.hostname, port=parts.port or 5432, user=parts.username,
            password=parts.password, dbname=parts.path.lstrip("/"),
            connect_timeout=PG_CONNECT_TIMEOUT_S,
        ).close()  # fmt: skip
    except psycopg2.OperationalError as error:
        first = (str(error).strip().splitlines() or ["no answer"])[0]
        raise ServerError(
            f"PostgreSQL at {parts.hostname}:{parts.port or 5432} is down ({first}); start it"
            " (or let this script start its own: leave out --backend-store-uri)"
        ) from None


def start_mlflow(
    uri: str, folder: Path, args: argparse.Namespace, check_stop: Callable[[], None]
) -> subprocess.Popen[bytes]:
    log = folder / "mlflow-server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", args.host, "--port", str(args.port), "--workers", str(args.workers),
        "--allowed-hosts", ",".join(allowed_hosts(args.allowed_hosts)),
    ]  # fmt: skip
    # MLflow's background job runner serves its GenAI features only, not experiment tracking.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}"
    try:
        _wait_until_up(server, url, log, check_stop)
    except BaseException:  # not up in time, or stopped meanwhile: it runs in its own session
        _stop(server)
        raise
    print(
        f"MLflow tracking server on {url} (backend {uri}, artifacts {folder / 'artifacts'});"
        f" on every machine: export MLFLOW_TRACKING_URI=http://<this host>:{args.port}",
        flush=True,
    )
    return server


def allowed_hosts(names: str) -> list[str]:
    """The Host headers MLflow accepts: its default (localhost and private IP addresses),
    this machine's names and ``names`` (comma-separated), each with any port. MLflow answers
    any other name 403 (DNS-rebinding protection), so a team that reaches the server by a
    name of its own gives it with --allowed-hosts."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    own = [socket.gethostname(), socket.getfqdn()]
    extra = [name.strip() for name in (*own, *names.split(",")) if name.strip()]
    named = [f"{name}{port}" for name in extra for port in ("", ":*")]
    return list(dict.fromkeys([*get_default_allowed_hosts(), *named]))


def _wait_until_up(
    server: subprocess.Popen[bytes], url: str, log: Path, check_stop: Callable[[], None]
) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        check_stop()
        if server.poll() is not None:
            raise ServerError(f"mlflow server exited ({server.returncode}): {_last_line(log)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                message = f"mlflow server not up in {SERVER_START_TIMEOUT_S} s: {log}"
                raise ServerError(message) from None
            time.sleep(0.5)


def wait(server: subprocess.Popen[bytes], log: Path, stop: StopRequest) -> int:
    """Serve until SIGINT / SIGTERM (0) or until the server dies (its one line, 1)."""
    while not stop.requested and server.poll() is None:
        time.sleep(0.5)
    if not stop.requested:
        raise ServerError(f"mlflow server exited ({server.returncode}): {_last_line(log)}")
    _stop(server)
    return 0


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), then SIGKILL."""
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    sys.exit(main())
