"""Ops on files: ``directory``, ``put``, ``template``, ``sync``.

Files reach the host through ``Host.put_*``: written to a temporary name in
the same directory, given their mode, then renamed over the target (SFTP
over SSH), so a reader never sees half a file. Whatever came from the
export is hashed again *on the host* and compared with the manifest's
sha256 before the step counts as done.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from orchestrator.replay.ops.base import (
    Arg,
    Check,
    Op,
    OpContext,
    OpFailed,
    describe_failure,
    sha256_bytes,
    sha256_file,
)
from providers.interfaces.host import Host

#: Paths an undo may never remove, whatever a record says (top-level system
#: directories, the temp directories among them: never removed, never written).
_TOP_LEVEL = ("bin", "boot", "dev", "etc", "home", "lib", "opt", "proc", "root", "run")
_PROTECTED = frozenset(
    {
        "/",
        *(f"/{name}" for name in (*_TOP_LEVEL, "sbin", "srv", "sys", "tmp", "usr", "var")),
        *(f"/var/{name}" for name in ("lib", "tmp")),
    }
)


_STAT_AND_HASH = 'stat -c "%F|%a|%U|%G" -- "$1" && { [ ! -f "$1" ] || sha256sum -- "$1"; }'


def stat_path(ctx: OpContext, path: str) -> dict[str, str] | None:
    """Type, octal mode, owner and group of ``path`` on the host, or None if it is missing."""
    result = ctx.run(["stat", "-c", "%F|%a|%U|%G", "--", path])
    if not result.ok:
        return None
    kind, mode, owner, group = result.stdout.decode().strip().split("|")
    return {"kind": kind, "mode": mode, "owner": owner, "group": group}


def _attribute_changes(found: Mapping[str, str] | None, args: Mapping[str, Any]) -> list[str]:
    if found is None:
        return []
    changes = []
    if args.get("mode") is not None and int(found["mode"], 8) != args["mode"]:
        changes.append(f"mode {found['mode']} -> {args['mode']:o}")
    if args.get("owner") and found["owner"] != args["owner"]:
        changes.append(f"owner {found['owner']} -> {args['owner']}")
    if args.get("group") and found["group"] != args["group"]:
        changes.append(f"group {found['group']} -> {args['group']}")
    return changes


def set_attributes(
    ctx: OpContext, path: str, args: Mapping[str, Any], *, recursive: bool = False
) -> None:
    if args.get("mode") is not None and not recursive:
        ctx.must(["chmod", format(args["mode"], "o"), "--", path], f"chmod {path}")
    if args.get("owner") or args.get("group"):
        spec = f"{args.get('owner') or ''}:{args.get('group') or ''}".rstrip(":")
        argv = ["chown", *(["-R"] if recursive else []), spec, "--", path]
        ctx.must(argv, f"chown {path}")


def remove_path(host: Host, path: str) -> str:
    """Remove a file or directory tree the replay made; idempotent; refuses system paths."""
    normal = "/" + "/".join(p for p in path.split("/") if p)
    if normal in _PROTECTED or normal.count("/") < 2 or ".." in normal.split("/"):
        raise OpFailed(f"refusing to remove {path}: not a path a replay makes")
    exists = (
        host.run(["test", "-e", normal], timeout=30).ok
        or host.run(["test", "-L", normal], timeout=30).ok
    )
    if not exists:
        return f"{normal}: already gone"
    result = host.run(["rm", "-rf", "--", normal], timeout=600)
    if not result.ok:
        raise OpFailed(
            f"could not remove {normal}: {result.stderr.decode(errors='replace')[-300:]}"
        )
    return f"removed {normal}"


class DirectoryOp(Op):
    name: ClassVar[str] = "directory"
    summary: ClassVar[str] = "a directory exists with mode, owner and group"
    args: ClassVar[dict[str, Arg]] = {
        "path": Arg("path", required=True, doc="absolute path on the host"),
        "mode": Arg("mode", doc='e.g. "0755"'),
        "owner": Arg("str", doc="user to own it"),
        "group": Arg("str", doc="group to own it"),
    }
    short: ClassVar[str | None] = "path"

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        found = stat_path(ctx, args["path"])
        if found is None:
            return Check(False, f"create {args['path']}", state={"existed": False})
        if found["kind"] != "directory":
            raise OpFailed(f"{args['path']} exists and is a {found['kind']}, not a directory")
        changes = _attribute_changes(found, args)
        if changes:
            return Check(False, f"{args['path']}: {', '.join(changes)}", state={"existed": True})
        return Check(True, f"{args['path']} is as asked", output={"path": args["path"]})

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        if not check.state["existed"] and not args.get("owner") and not args.get("group"):
            # One round trip for the common case: made with its mode.
            argv = ["mkdir", "-p", "--", args["path"]]
            if args.get("mode") is not None:
                argv = [
                    "sh",
                    "-c",
                    'mkdir -p -- "$1" && chmod "$2" -- "$1"',
                    "exitplan-mkdir",
                    args["path"],
                    format(args["mode"], "o"),
                ]
            ctx.must(argv, f"mkdir {args['path']}")
            return {"path": args["path"]}
        if not check.state["existed"]:
            ctx.must(["mkdir", "-p", "--", args["path"]], f"mkdir {args['path']}")
        set_attributes(ctx, args["path"], args)
        return {"path": args["path"]}

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        return None if check.state.get("existed") else {"remove": args["path"]}

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        return remove_path(host, str(record["remove"]))

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"directory {args['path']}"


class _FileOp(Op):
    """Shared by ``put`` and ``template``: one file with content, mode and owner."""

    def content(self, ctx: OpContext, args: Mapping[str, Any]) -> tuple[str, bytes | Path | None]:
        """The wanted sha256, and the bytes or local file (None: an artifact not fetched yet)."""
        raise NotImplementedError

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        dest = args["dest"]
        wanted, data = self.content(ctx, args)
        secret = isinstance(data, bytes) and ctx.redactor.contains_secret(
            data.decode("utf-8", "replace")
        )
        if secret and args["mode"] & 0o077:
            raise OpFailed(
                f"{dest} would hold a secret with mode {args['mode']:04o}; give it mode "
                '"0600" (or "0400") so only its owner can read it'
            )
        # One round trip: the file's type, mode and owner, then its hash.
        result = ctx.run(["sh", "-c", _STAT_AND_HASH, "exitplan-stat", dest])
        lines = result.stdout.decode("utf-8", "replace").splitlines()
        if not lines:
            diff = self._diff(ctx, args, None, data)
            return Check(
                False, f"create {dest}", diff=diff, state={"existed": False, "sha256": wanted}
            )
        kind, mode, owner, group = lines[0].split("|")
        found = {"kind": kind, "mode": mode, "owner": owner, "group": group}
        if kind not in ("regular file", "regular empty file"):
            raise OpFailed(f"{dest} exists and is a {kind}, not a file")
        if len(lines) < 2:
            raise OpFailed(f"cannot read {dest} to hash it: {describe_failure(result)}")
        current = lines[1].split()[0]
        changes = _attribute_changes(found, args)
        if current != wanted:
            changes.insert(0, "content differs")
        if not changes:
            return Check(True, f"{dest} is as asked", output={"dest": dest, "sha256": wanted})
        diff = self._diff(ctx, args, dest, data) if current != wanted else ""
        return Check(
            False,
            f"{dest}: {', '.join(changes)}",
            diff=diff,
            state={"existed": True, "sha256": wanted},
        )

    def _diff(self, ctx: OpContext, args: Mapping[str, Any], dest: str | None, data: Any) -> str:
        if not isinstance(data, bytes) or b"\0" in data or len(data) > 256 * 1024:
            return ""
        old = b""
        if dest is not None:
            result = ctx.run(["head", "-c", str(256 * 1024), "--", dest])
            old = result.stdout if result.ok else b""
        if b"\0" in old:
            return f"binary file {args['dest']} differs\n"
        lines = difflib.unified_diff(
            old.decode("utf-8", "replace").splitlines(keepends=True),
            data.decode("utf-8", "replace").splitlines(keepends=True),
            fromfile=f"{args['dest']} (on the host)",
            tofile=f"{args['dest']} (wanted)",
        )
        return ctx.redactor.text("".join(lines))

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        dest = args["dest"]
        wanted, data = self.content(ctx, args)
        if data is None:
            data = self.fetch(ctx, args)
        if isinstance(data, bytes):
            ctx.host.put_bytes(data, dest, mode=args["mode"])
        else:
            ctx.host.put_file(data, dest, mode=args["mode"])
        if args.get("owner") or args.get("group"):
            set_attributes(ctx, dest, {"owner": args.get("owner"), "group": args.get("group")})
        return {"dest": dest, "sha256": wanted}

    def fetch(self, ctx: OpContext, args: Mapping[str, Any]) -> Path:
        raise NotImplementedError

    def verify(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> None:
        # Hashed again on the host: an artifact counts only once the host's copy matches.
        result = ctx.must(["sha256sum", "--", args["dest"]], f"hash {args['dest']}")
        found = result.stdout.decode().split()[0]
        if found != check.state["sha256"]:
            raise OpFailed(
                f"{args['dest']} on the host has sha256 {found}, not {check.state['sha256']}: "
                "the copy was damaged on the way; the step can be run again"
            )

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        return None if check.state.get("existed") else {"remove": args["dest"]}

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        return remove_path(host, str(record["remove"]))

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"{self.name} {args['dest']}"


class PutOp(_FileOp):
    name: ClassVar[str] = "put"
    summary: ClassVar[str] = "a file from beside the playbook, an export artifact, or given content"
    args: ClassVar[dict[str, Arg]] = {
        "dest": Arg("path", required=True, doc="absolute path on the host"),
        "src": Arg("local", doc="a file relative to the playbook"),
        "artifact": Arg(
            "artifact", doc="an artifact name (its manifest sha256 is checked on the host)"
        ),
        "content": Arg("str", secret_ok=True, doc="the file's content"),
        "mode": Arg("mode", default=0o644, doc='default "0644"'),
        "owner": Arg("str"),
        "group": Arg("str"),
    }

    def _source(self, args: Mapping[str, Any]) -> str:
        given = [k for k in ("src", "artifact", "content") if args.get(k) is not None]
        if len(given) != 1:
            raise OpFailed("put: give exactly one of src, artifact or content")
        return given[0]

    def content(self, ctx: OpContext, args: Mapping[str, Any]) -> tuple[str, bytes | Path | None]:
        source = self._source(args)
        if source == "content":
            data = str(args["content"]).encode()
            return sha256_bytes(data), data
        if source == "src":
            path = ctx.playbook_dir / args["src"]
            if not path.is_file():
                raise OpFailed(f"put: no file {path} beside the playbook")
            return sha256_file(path), path
        if ctx.artifacts is None:
            raise OpFailed("put: artifacts need an export to read from")
        entry = ctx.artifacts.entry(artifact_key(ctx, args["artifact"]))
        return entry.sha256, None

    def fetch(self, ctx: OpContext, args: Mapping[str, Any]) -> Path:
        assert ctx.artifacts is not None
        return ctx.artifacts.fetch(artifact_key(ctx, args["artifact"]), ctx.scratch)


def artifact_key(ctx: OpContext, name: str) -> str:
    """The manifest key of artifact ``name`` (the runner puts the declared ones in ``ctx``)."""
    keys = ctx.artifact_keys
    if name not in keys:
        raise OpFailed(f"no artifact {name!r} is declared under 'artifacts:'")
    return str(keys[name])


class TemplateOp(_FileOp):
    name: ClassVar[str] = "template"
    summary: ClassVar[str] = (
        "a file rendered with Jinja2 (sandboxed); secrets only in mode 0600 files"
    )
    args: ClassVar[dict[str, Arg]] = {
        "dest": Arg("path", required=True, doc="absolute path on the host"),
        "src": Arg("local", doc="a template file relative to the playbook"),
        "content": Arg("str", secret_ok=True, doc="the template text itself"),
        "mode": Arg("mode", default=0o644, doc='default "0644"; "0600" when it holds a secret'),
        "owner": Arg("str"),
        "group": Arg("str"),
    }

    def content(self, ctx: OpContext, args: Mapping[str, Any]) -> tuple[str, bytes | Path | None]:
        if (args.get("src") is None) == (args.get("content") is None):
            raise OpFailed("template: give one of src or content")
        if args.get("src") is not None:
            path = ctx.playbook_dir / args["src"]
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise OpFailed(f"template: cannot read {path}: {exc.strerror}") from None
            assert ctx.render is not None
            text = ctx.render(text)
        else:
            # ``content`` was rendered with the step's other arguments.
            text = str(args["content"])
        data = text.encode()
        return sha256_bytes(data), data


class SyncOp(Op):
    name: ClassVar[str] = "sync"
    summary: ClassVar[str] = (
        "every object under an exported prefix into a directory, each checked by sha256"
    )
    args: ClassVar[dict[str, Arg]] = {
        "artifact": Arg("artifact", required=True, doc="a prefix artifact"),
        "dest": Arg("path", required=True, doc="directory on the host"),
        "mode": Arg("mode", default=0o644, doc='mode of each file, default "0644"'),
        "owner": Arg("str"),
        "group": Arg("str"),
        "workers": Arg("int", default=8, doc="files copied at once"),
    }

    def _wanted(self, ctx: OpContext, args: Mapping[str, Any]) -> dict[str, tuple[str, str, int]]:
        if ctx.artifacts is None:
            raise OpFailed("sync: needs an export to read from")
        prefix = artifact_key(ctx, args["artifact"])
        wanted = {}
        for entry in ctx.artifacts.under(prefix):
            rel = entry.key[len(prefix) :].lstrip("/")
            if not rel or rel.endswith("/"):
                continue
            if ".." in rel.split("/"):
                raise OpFailed(f"sync: {entry.key} would land outside {args['dest']}; refusing")
            wanted[rel] = (entry.key, entry.sha256, entry.size)
        return wanted

    def _on_host(self, ctx: OpContext, dest: str) -> dict[str, str]:
        # One command lists every file with its sha256, NUL-separated names.
        script = (
            'cd -- "$1" 2>/dev/null || exit 0; find . -type f -print0 | xargs -0 -r sha256sum -z --'
        )
        result = ctx.must(
            ["sh", "-c", script, "exitplan-sync", dest],
            f"hash the files under {dest}",
            timeout=max(ctx.timeout, 600),
        )
        found = {}
        for record in result.stdout.split(b"\0"):
            if not record:
                continue
            digest, _, name = record.decode("utf-8", "surrogateescape").partition("  ")
            found[name[2:] if name.startswith("./") else name] = digest.lstrip("\\")
        return found

    def check(self, ctx: OpContext, args: Mapping[str, Any]) -> Check:
        wanted = self._wanted(ctx, args)
        existed = stat_path(ctx, args["dest"]) is not None
        found = self._on_host(ctx, args["dest"]) if existed else {}
        todo = sorted(rel for rel, (_, digest, _) in wanted.items() if found.get(rel) != digest)
        total = sum(size for _, _, size in wanted.values())
        output = {"dest": args["dest"], "files": len(wanted), "bytes": total}
        if not todo:
            return Check(
                True,
                f"all {len(wanted)} files under {args['dest']} match the manifest",
                output=output,
            )
        return Check(
            False,
            f"copy {len(todo)} of {len(wanted)} files to {args['dest']}",
            state={"existed": existed, "todo": todo, "output": output},
        )

    def apply(self, ctx: OpContext, args: Mapping[str, Any], check: Check) -> dict[str, Any]:
        assert ctx.artifacts is not None
        wanted = self._wanted(ctx, args)
        dest = args["dest"].rstrip("/")
        todo: list[str] = check.state["todo"]
        directories = sorted(
            {dest} | {f"{dest}/{rel.rpartition('/')[0]}" for rel in todo if "/" in rel}
        )
        for start in range(0, len(directories), 500):
            ctx.must(
                ["mkdir", "-p", "--", *directories[start : start + 500]],
                f"make directories under {dest}",
            )
        artifacts = ctx.artifacts

        def copy(rel: str) -> None:
            ctx.cancel.raise_if_set()
            key = wanted[rel][0]
            local = artifacts.fetch(key, ctx.scratch / "sync")
            try:
                ctx.host.put_file(local, f"{dest}/{rel}", mode=args["mode"])
            finally:
                local.unlink(missing_ok=True)

        with ThreadPoolExecutor(
            max(1, args["workers"]), thread_name_prefix="exitplan-sync"
        ) as pool:
            for future in [pool.submit(copy, rel) for rel in todo]:
                future.result()
        if args.get("owner") or args.get("group"):
            set_attributes(
                ctx, dest, {"owner": args.get("owner"), "group": args.get("group")}, recursive=True
            )
        return {**check.state["output"], "copied": len(todo)}

    def undo_record(self, args: Mapping[str, Any], check: Check) -> dict[str, Any] | None:
        if not check.state.get("existed"):
            return {"remove": args["dest"]}
        return {
            "remove_files": [f"{args['dest'].rstrip('/')}/{rel}" for rel in check.state["todo"]]
        }

    @classmethod
    def undo(cls, host: Host, record: Mapping[str, Any]) -> str:
        if "remove" in record:
            return remove_path(host, str(record["remove"]))
        files: Iterable[str] = record.get("remove_files", [])
        names = list(files)
        for start in range(0, len(names), 500):
            host.run(["rm", "-f", "--", *names[start : start + 500]], timeout=600)
        return f"removed {len(names)} synced file(s)"

    def describe(self, args: Mapping[str, Any]) -> str:
        return f"sync {args['artifact']} -> {args['dest']}"


def quote(argv: Iterable[str]) -> str:
    return shlex.join(list(argv))
