"""A throwaway PostgreSQL server for the scripts (the Rust tests have their own).

    with TempServer() as server:
        server.createdb("x"); server.url("x")

As a command: `python3 scripts/pgtemp.py [--host NAME] -- CMD...` runs CMD with DATABASE_URL
(database `app`) and PGHOST/PGPORT/PGUSER/PGDATABASE set, then stops the server and exits with
CMD's exit code.
"""
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(os.listdir("/usr/lib/postgresql"))
    return f"/usr/lib/postgresql/{versions[-1]}/bin/{name}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempServer:
    """initdb + postgres (as the `postgres` user when run as root), fsync and synchronous_commit
    off, data in /dev/shm when writable: file creation on a virtual disk is slow and noisy, and
    what the benchmarks measure is the client."""

    def __enter__(self):
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="migrun-bench-", dir=shm)
        demote = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)

            def demote():
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        data = os.path.join(self.dir, "data")
        subprocess.run([pg_bin("initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
                        "-D", data], preexec_fn=demote, check=True, stdout=subprocess.DEVNULL)
        self.port = free_port()
        self.process = subprocess.Popen(
            [pg_bin("postgres"), "-D", data, "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", self.dir],
            preexec_fn=demote, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.psql_env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER="postgres")
        deadline = time.time() + 30
        while self.psql("postgres", "SELECT 1").returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, db, sql):
        return subprocess.run(["psql", "-X", "-qtA", "-d", db, "-c", sql], env=self.psql_env, capture_output=True, text=True)

    def createdb(self, name):
        subprocess.run(["psql", "-X", "-q", "-d", "postgres", "-c", f"CREATE DATABASE {name}"], env=self.psql_env, check=True)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"


def main(argv):
    host = "127.0.0.1"
    if argv[:1] == ["--host"]:
        host, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SystemExit("usage: pgtemp.py [--host NAME] -- CMD...")
    with TempServer() as server:
        server.createdb("app")
        env = dict(os.environ, DATABASE_URL=f"postgres://postgres@{host}:{server.port}/app",
                   PGHOST="127.0.0.1", PGPORT=str(server.port), PGUSER="postgres", PGDATABASE="app")
        return subprocess.run(argv, env=env).returncode


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
