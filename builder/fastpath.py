"""Replay of a fully cached build: an unchanged rebuild is answered without planning or solving.

A fully cached rebuild used to spend ~0.15 s importing the parser, planner, solver and store (~80 dataclasses
and their generated methods) to find that every step is a cache hit. Here `lookup` derives a key from
everything such a build depends on, before any of that is imported:

- the command line (every flag but the progress mode), the resolved --build-arg/--label values, the uid,
  SOURCE_DATE_EPOCH, Python's version and the (name, size, mtime) of every pybuild source file;
- the Dockerfile's and the .dockerignore's bytes and paths;
- the build context: (path, type, mode, size, inode, mtime_ns, ctime_ns) of every entry, ignored ones
  included (ctime catches writes that restore the mtime, a new or renamed file changes its directory).

A build that qualifies (a local context, no outputs, pushes, pulls, secrets, ssh, metadata file, explain,
--no-cache, --check or remote sources) and whose every step was a cache hit saves a memo under that key
in ``<root>/fastpath``: the context's fingerprint, its progress events, the image, the cache records (key,
snapshot, blob) and the base images (name -> manifest) it resolved. The context is walked only when a memo
for the key exists (so builds that never repeat do not pay the walk): the first build of a key leaves a memo
without a fingerprint, the next fully cached one (walking before it reads the context) completes it, and later
ones replay it. A build replays the memo only when the fingerprint matches and one write transaction on the index
confirmed that the image, each record with its snapshot and blob, and each base's tag are still what they
were (bumping the records' use counts and setting the tags, as the full path does); anything else, or any
error, falls back to the full build. Like the stat cache, a context with an entry changed less than RACY_NS
before the walk is not trusted: such a build saves no memo.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time

RACY_NS = 50_000_000  # as cache/statcache.py: above the kernel's coarse timestamp tick
KEEP = 256  # memos kept per store (one per Dockerfile, flags and context directory)
MAX_ENTRIES = 50_000  # a larger context is not fingerprinted (the walk would cost more than it saves)
VERSION = b"fastpath 1"
_PACKAGES = ("builder", "cache", "grammar")
_IGNORED_ARGS = ("progress", "quiet", "debug", "iidfile", "jobs")  # no bearing on the image
_REPLAYED = ("StepStarted", "StepCached", "BuildWarning", "BuildSummary")  # any other event: a step ran


class Memo:
    """The key of one build and, after it ran, what a replay needs (see the module docstring)."""

    def __init__(self, root: str, key: str, context: str) -> None:
        self.root, self.key, self.context_dir = root, key, context
        self.context: str | None = None  # the context's fingerprint, taken only when a memo for key exists
        self.events: list[dict] = []
        self.qualifies = True  # nothing the memo cannot vouch for (outputs, remote sources, a racy context)
        self.cached = True  # every step was a cache hit: the events are what a replay shows
        self.found = False  # a memo for the key existed (then the context was walked)
        self.bases: dict[str, str] = {}
        self.keys: list[str] = []

    def fingerprint(self) -> str | None:
        """Walk the context (before the build reads it); a context changed within RACY_NS is not memoised."""
        started = time.time_ns()
        h = hashlib.sha256()
        newest = _hash_tree(h, self.context_dir)
        if newest is None or newest > started - RACY_NS:
            self.qualifies = False
            return None
        self.context = h.hexdigest()
        return self.context

    @property
    def path(self) -> str:
        return os.path.join(self.root, "fastpath", self.key + ".json")

    def observe(self, sink):
        """Wrap the progress sink: keep the events a replay shows; any other (a step ran) disqualifies."""
        from builder.progress.events import to_json  # lazy: saves ~22 ms at start-up

        def observed(event) -> None:
            name = type(event).__name__
            if name in _REPLAYED:
                self.events.append(json.loads(to_json(event)))  # ts is replaced on replay
            elif name != "BuildDone":
                self.cached = False
            sink(event)
        return observed

    def resolver(self, resolve):
        """Wrap the FROM resolver: remember each store-resolved base's manifest (other sources disqualify)."""
        def resolved(ref: str):
            base = resolve(ref)
            source = base.source
            if source is not None:
                if getattr(source, "layout_dir", None):
                    self.qualifies = False
                else:
                    self.bases[ref] = source.manifest_digest
            return base
        return resolved

    def finish(self, graph, results) -> None:
        """After solving: the cache keys used; steps that fetch URLs or git repositories disqualify."""
        for step in graph.steps:
            for action in getattr(step.op, "actions", ()):
                if action.op not in ("copy", "mkdir", "write") or action.url:
                    self.qualifies = False
        self.keys = sorted({r.key.digest for r in results.values()})

    def save(self, result, summary: str | None) -> None:
        """Write the memo (atomically) when the build qualified; never fails the build. A first build of this
        key leaves one without the context's fingerprint, which the next build (walking first) completes."""
        if not self.qualifies or not self.keys:
            return
        if not self.found:
            self._write({"context": None})
            return
        if not self.cached or self.context is None:
            return
        # lazy: saves ~60 ms at start-up
        import sqlite3

        from builder.plan.bases import normalize_name

        try:
            db = sqlite3.connect(os.path.join(self.root, "index.db"), timeout=5)
            try:
                marks = ",".join("?" * len(self.keys))
                rows = db.execute(f"SELECT key, snapshot_id, blob FROM records WHERE key IN ({marks})",
                                  self.keys).fetchall()
                image = db.execute("SELECT config FROM images WHERE manifest=?",
                                   (result.manifest_digest,)).fetchone()
            finally:
                db.close()
            if len(rows) != len(self.keys) or image is None:
                return
            doc = {"context": self.context, "events": self.events, "summary": summary, "image_id": result.image_id,
                   "manifest": result.manifest_digest, "config": image[0], "names": list(result.names),
                   "records": sorted(list(r) for r in rows),
                   "bases": sorted([normalize_name(ref), digest] for ref, digest in self.bases.items())}
            self._write(doc)
        except (sqlite3.Error, ValueError):
            return

    def _write(self, doc: dict) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
            _trim(os.path.dirname(self.path))
        except OSError:
            return


def _trim(directory: str) -> None:
    """Keep the KEEP most recently written memos (a replay does not rewrite its memo: written = made)."""
    names = [n for n in os.listdir(directory) if n.endswith(".json")]
    if len(names) <= KEEP:
        return
    paths = sorted((os.path.join(directory, n) for n in names), key=lambda p: os.stat(p).st_mtime_ns)
    for path in paths[:len(paths) - KEEP]:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# Flags a memo can stand for (they only shape the key or the output). Every other flag must be unset: outputs,
# pushes, pulls, secrets, --check ... and any flag added later, until someone decides it belongs here.
_KEYED = frozenset({"context", "dockerfile", "tag", "build_arg", "target", "compression", "iidfile", "progress",
                    "quiet", "jobs", "label", "network", "root", "debug", "insecure_registry"})


def qualifies(args, defaults: dict | None = None) -> bool:
    """Only plain local builds are memoised: nothing that writes elsewhere or reads outside the context. A flag
    outside _KEYED disables the memo when it is set (differs from its default in `defaults`, else when truthy)."""
    defaults = defaults or {}
    if args.context == "-" or args.dockerfile == "-" or not os.path.isdir(args.context):
        return False
    dockerfile = args.dockerfile or os.path.join(args.context, "Dockerfile")
    # The build reads these confined to their own directory (builder/context/inputs.py), where a symlink means
    # something else than to the OS: the key could not hash what the build reads, so such builds are not memoised.
    linked = [dockerfile, dockerfile + ".dockerignore", os.path.join(args.context, ".dockerignore"),
              os.path.join(args.root, "fastpath")]
    return (not any(os.path.islink(path) for path in linked)
            and not any(value and value != defaults.get(name) for name, value in vars(args).items()
                        if name not in _KEYED))


def memo_for(args, build_args: dict, labels: dict) -> Memo:
    """The key of this build: everything but the context, whose fingerprint the memo itself holds."""
    h = hashlib.sha256(VERSION)
    opts = {k: v for k, v in sorted(vars(args).items()) if k not in _IGNORED_ARGS}
    opts.update(build_arg=sorted(build_args.items()), label=sorted(labels.items()),
                context=os.path.abspath(args.context), root=os.path.abspath(args.root),
                dockerfile=os.path.abspath(args.dockerfile or os.path.join(args.context, "Dockerfile")))
    extra = [sys.version, _caller_uid(), os.environ.get("SOURCE_DATE_EPOCH"), os.environ.get("PYBUILD_ROOT")]
    h.update(json.dumps([opts, extra], sort_keys=True, default=str).encode())
    _hash_sources(h)
    for path in (opts["dockerfile"], opts["dockerfile"] + ".dockerignore",
                 os.path.join(opts["context"], ".dockerignore")):
        _hash_file(h, path)
    return Memo(opts["root"], h.hexdigest(), opts["context"])


def _caller_uid() -> int:
    """The user a build runs for: in rootless mode the uid outside the namespace, where builder/cli.py looks the
    memo up before entering it (root and each user have memos of their own, as they have stores)."""
    rootless = sys.modules.get("builder.rootless")
    return rootless.outside_uid() if rootless is not None and rootless.entered() else os.getuid()


def _hash_file(h, path: str) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        h.update(b"missing %d\0" % (exc.errno or 0))
        return
    h.update(b"%d\0" % len(data))
    h.update(data)


def _hash_sources(h) -> None:
    base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in _PACKAGES:
        for top, dirs, files in os.walk(os.path.join(base, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".lark", ".json")):
                    st = os.stat(os.path.join(top, name))
                    h.update(f"{top}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())


def _hash_tree(h, root: str) -> int | None:
    """Feed every entry's stat into h; the newest mtime/ctime seen (None: too many entries)."""
    st = os.lstat(root)
    seen: list[tuple] = [(root, st.st_mode, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns)]
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:  # directory order: a directory that is not changed lists the same way
                st = e.stat(follow_symlinks=False)
                seen.append((e.path, st.st_mode, st.st_size, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns))
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
        if len(seen) > MAX_ENTRIES:
            return None
    h.update(repr(seen).encode("utf-8", "surrogateescape"))
    return max(max(t[-2], t[-1]) for t in seen)


def replay(memo: Memo) -> dict | None:
    """The memo's document when the store still holds everything it names (and the uses were counted)."""
    # lazy: saves ~3 ms at start-up
    import fcntl
    import sqlite3

    try:
        if not all(_own(path) for path in (memo.root, os.path.dirname(memo.path), memo.path)):
            return None  # another user's store (the full path refuses it) or memo: their word, not ours
        with open(memo.path, encoding="utf-8") as f:
            doc = json.load(f)
        memo.found = True
        if memo.fingerprint() != doc["context"] or doc["context"] is None or not _events_ok(doc["events"]):
            return None
        fd = os.open(os.path.join(memo.root, "store.lock"), os.O_RDWR | os.O_CLOEXEC)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a prune is sweeping: take the full path (it waits)
        if not _files_present(memo.root, doc):
            return None
        db = sqlite3.connect(os.path.join(memo.root, "index.db"), timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # as cache/index.py: WAL, no fsync per commit
            return doc if _confirm(db, doc) else None
        finally:
            db.close()
    except (OSError, sqlite3.Error, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def _own(path: str) -> bool:
    """``path`` is this user's and nobody else may write it (as cache/__init__.py's `_make_private` demands)."""
    st = os.stat(path)
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


# the progress events a memo may hold (its own name: as `_REPLAYED` it replaced the tuple above, so a build
# whose steps ran (StepLog/StepDone) was memoised and replayed their output instead of CACHED)
_MEMO_EVENTS = frozenset({"StepStarted", "StepCached", "StepLog", "StepDone", "StepExplain", "BuildWarning",
                          "TransferProgress", "BuildSummary"})


def _events_ok(events) -> bool:
    """A damaged memo (events that are no progress events) takes the full path instead of failing the replay."""
    return isinstance(events, list) and all(isinstance(e, dict) and e.get("type") in _MEMO_EVENTS for e in events)


def _blob(root: str, digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or not all(c in "0123456789abcdef" for c in hexpart):
        raise ValueError(digest)
    return os.path.join(root, "blobs", "sha256", hexpart)


def _files_present(root: str, doc: dict) -> bool:
    blobs = [doc["manifest"], doc["config"]]
    blobs += [blob for _, snap, blob in doc["records"] if blob and snap is None]  # else a lazy layer: its snapshot
    snaps = [snap for _, snap, _ in doc["records"] if snap is not None]
    return (all(os.path.isfile(_blob(root, b)) for b in blobs)
            and all(os.path.isdir(os.path.join(root, "snapshots", str(int(s)), "fs")) for s in snaps))


def _confirm(db, doc: dict) -> bool:
    """One write transaction: records, snapshots, image and bases unchanged; uses bumped; tags set."""
    keys = [key for key, _, _ in doc["records"]]
    marks = ",".join("?" * len(keys))
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    try:
        rows = db.execute(f"SELECT r.key, r.snapshot_id, r.blob FROM records r LEFT JOIN snapshots s"
                          f" ON s.id = r.snapshot_id WHERE r.key IN ({marks})"
                          f" AND (r.snapshot_id IS NULL OR s.state = 'ready')", keys).fetchall()
        ok = sorted(list(r) for r in rows) == doc["records"]
        ok = ok and db.execute("SELECT config FROM images WHERE manifest=?", (doc["manifest"],)).fetchone() \
            == (doc["config"],)
        for name, digest in doc["bases"]:
            found = db.execute("SELECT t.manifest FROM tags t JOIN images i ON i.manifest = t.manifest"
                               " WHERE t.name=?", (name,)).fetchone()
            ok = ok and found == (digest,)
        if not ok:
            db.execute("ROLLBACK")
            return False
        db.execute(f"UPDATE records SET last_used=?, uses=uses+1 WHERE key IN ({marks})", [now, *keys])
        db.executemany("INSERT OR REPLACE INTO tags VALUES (?, ?, ?)",
                       [(name, doc["manifest"], now) for name in doc["names"]])
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return True


def show(doc: dict, mode: str, elapsed: float, out) -> bool:
    """Render the memo's events as builder/progress/display.py would in quiet, rawjson and plain modes (no
    import of the event classes); False for the tty view, which the caller renders with the real display."""
    if mode == "auto":
        mode = "tty" if out.isatty() else "plain"
    if mode == "quiet":
        return True
    if mode not in ("rawjson", "plain"):
        return False
    done = {"type": "BuildDone", "image_id": doc["image_id"], "manifest_digest": doc["manifest"],
            "elapsed": elapsed, "ts": 0.0}
    for event in [*doc["events"], done]:
        event = dict(event, ts=time.time())
        if event["type"] == "BuildSummary":
            event["elapsed"] = elapsed
        if mode == "rawjson":
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
        elif event["type"] == "StepStarted":
            from builder.progress.text import printable  # lazy: saves ~0.5 ms at start-up of a quiet replay

            out.write(f"#{event['number']} {printable(event['title'])}\n")
        elif event["type"] == "StepCached":
            out.write(f"#{event['number']} CACHED\n")
        elif event["type"] == "BuildSummary":
            from builder.progress.text import summary_line  # lazy: saves ~0.5 ms at start-up of a replay without one

            fields = (event["steps"], event["ran"], event["cached"], elapsed, event["size"], event.get("compressed", True))
            out.write(f"#summary {summary_line(*fields)}\n")
        elif event["type"] == "BuildDone":
            out.write(f"#done image {event['image_id']} manifest {event['manifest_digest']} in {elapsed:.1f}s\n")
        out.flush()
    return True
