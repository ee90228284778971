"""The workspace store: one SQLite database (WAL) that every stage reads from and commits to.

Every write is an idempotent upsert keyed as in DESIGN.md, committed at once, so a killed
job loses at most the requests that were in flight and a re-run does only what is missing.
Nothing secret is ever written here: recipes are stored through ``redact``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.secrets import mask_tokens, redact
from pipelines.types import Conversation, GenerationResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    conversation_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    messages TEXT NOT NULL,
    original_response TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    num_turns INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS candidates (
    conversation_id TEXT NOT NULL,
    generator_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    params TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,              -- done | failed
    text TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    finish_reason TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, generator_id, sample_index)
);
CREATE TABLE IF NOT EXISTS judgments (
    conversation_id TEXT NOT NULL,
    judge_id TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,              -- done | partial | failed
    candidate_keys TEXT NOT NULL,      -- ["generator_id/sample_index", ...] in storage order
    ratings TEXT NOT NULL,             -- aligned with candidate_keys; null where unreadable
    rationales TEXT NOT NULL,          -- aligned with candidate_keys
    order_shown TEXT NOT NULL,         -- permutation: position shown -> index in candidate_keys
    seed INTEGER,
    raw_output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, judge_id)
);
CREATE TABLE IF NOT EXISTS reviews (
    conversation_id TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    source TEXT NOT NULL,              -- ui | argilla
    ratings TEXT NOT NULL DEFAULT '{}',-- {candidate_key: 1..5}
    chosen TEXT,                       -- candidate_key picked as chosen
    rejected TEXT,                     -- candidate_key picked as rejected
    discard INTEGER NOT NULL DEFAULT 0,
    comment TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (conversation_id, reviewer, source)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    recipe TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,              -- running | done | failed | cancelled | interrupted
    counters TEXT NOT NULL DEFAULT '{}',
    last_error TEXT,
    pid INTEGER,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS loads (
    load_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    report TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates (generator_id, status);
CREATE TABLE IF NOT EXISTS argilla_push (
    dataset_key TEXT NOT NULL,         -- api_url + '|' + dataset id on the server
    conversation_id TEXT NOT NULL,
    record_id TEXT,                    -- the record's id on the server
    record_hash TEXT NOT NULL,         -- hash of the fields, suggestions and metadata sent
    slot_keys TEXT NOT NULL,           -- JSON: candidate key shown in slot 1..N
    pushed_at REAL NOT NULL,
    PRIMARY KEY (dataset_key, conversation_id)
);
"""

# Ordered schema migrations, as in Simon Willison's ``llm``: entry i brings a database from
# version i to i + 1 (``PRAGMA user_version``). Append, never edit or reorder: a workspace made
# by any earlier version opens and is upgraded in place, in one transaction per step.
# Version 1 is the schema of the first release (every statement IF NOT EXISTS, so databases
# written before versioning existed, at user_version 0, upgrade cleanly).
MIGRATIONS: list[str] = [
    SCHEMA,
    # 2: a review that kept the AI's suggested ratings untouched is recorded as such, so stats and
    # the dataset card count "accepted the AI" apart from human judgments
    "ALTER TABLE reviews ADD COLUMN accepted_ai INTEGER NOT NULL DEFAULT 0;",
    # issue 10: a job's process identity (boot id, pid, process start time): a container restart
    # reuses the pid, so liveness compares the whole identity, never the pid alone
    "ALTER TABLE jobs ADD COLUMN proc TEXT;",
]
SCHEMA_VERSION = len(MIGRATIONS)


class StaleReviewError(RuntimeError):
    """A review submitted from a view of a conversation that changed since it was shown."""


class SchemaTooNewError(RuntimeError):
    """The workspace was written by a newer CapyUI than this one."""


def migrate(db: sqlite3.Connection) -> int:
    """Apply every pending migration to ``db``; returns the version it is at now."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"this workspace has schema version {version}; this CapyUI knows up to"
            f" {SCHEMA_VERSION}: upgrade CapyUI to open it"
        )
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            # re-read under the write lock: another process may have migrated meanwhile
            if db.execute("PRAGMA user_version").fetchone()[0] >= target:
                db.execute("ROLLBACK")
                continue
            for statement in _statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {int(target)}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return db.execute("PRAGMA user_version").fetchone()[0]


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def candidate_key(generator_id: str, sample_index: int) -> str:
    return f"{generator_id}/{sample_index}"


@dataclass
class Candidate:
    conversation_id: str
    generator_id: str
    sample_index: int
    model: str
    text: str

    @property
    def key(self) -> str:
        return candidate_key(self.generator_id, self.sample_index)


def default_data_dir() -> Path:
    env = os.environ.get("CAPYUI_DATA_DIR")
    if env:
        return Path(env)
    if Path("/data").is_dir() and os.access("/data", os.W_OK) and os.environ.get("SPACE_ID"):
        return Path("/data/capyui")
    return Path("capyui-data")


class Store:
    """A workspace: ``<data_dir>/capyui.sqlite``. Safe to share between threads of one process."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "capyui.sqlite"
        self._local = threading.local()
        migrate(self._connection())

    # -- connection -------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=60000")
            self._local.db = db
        return db

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def schema_version(self) -> int:
        return self._connection().execute("PRAGMA user_version").fetchone()[0]

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- conversations ----------------------------------------------------------------------
    def add_conversations(self, conversations: Iterable[Conversation]) -> tuple[int, int]:
        """Insert new conversations, leaving stored ones alone. Returns (added, existing)."""
        added = existing = 0
        now = time.time()
        batch: list[Conversation] = []

        def flush() -> None:
            nonlocal added, existing
            with self._conn() as db:
                for c in batch:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO conversations VALUES (?,?,?,?,?,?,?)",
                        (
                            c.conversation_id,
                            c.source,
                            json.dumps(c.messages, ensure_ascii=False),
                            c.original_response,
                            json.dumps(c.metadata, ensure_ascii=False, default=str),
                            c.num_turns,
                            now,
                        ),
                    )
                    if cur.rowcount:
                        added += 1
                    else:
                        existing += 1
            batch.clear()

        for conv in conversations:
            batch.append(conv)
            if len(batch) >= 1000:
                flush()
        if batch:
            flush()
        return added, existing

    @staticmethod
    def _row_to_conversation(row: sqlite3.Row) -> Conversation:
        return Conversation(
            messages=json.loads(row["messages"]),
            source=row["source"],
            original_response=row["original_response"],
            metadata=json.loads(row["metadata"]),
            conversation_id=row["conversation_id"],
        )

    def conversations(
        self, limit: int | None = None, offset: int = 0, ids: Iterable[str] | None = None
    ) -> list[Conversation]:
        """Conversations in load order (rowid), optionally only ``ids``."""
        if ids is not None:
            wanted = list(ids)
            out: list[Conversation] = []
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.query(
                    f"SELECT * FROM conversations WHERE conversation_id IN ({marks})", chunk
                )
                by_id = {r["conversation_id"]: r for r in rows}
                out.extend(self._row_to_conversation(by_id[c]) for c in chunk if c in by_id)
            return out
        sql = "SELECT * FROM conversations ORDER BY rowid"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params = [limit, offset]
        return [self._row_to_conversation(r) for r in self.query(sql, params)]

    def conversation(self, conversation_id: str) -> Conversation | None:
        found = self.conversations(ids=[conversation_id])
        return found[0] if found else None

    def count_conversations(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM conversations")[0][0])

    def conversation_ids(self, limit: int | None = None) -> list[str]:
        sql = "SELECT conversation_id FROM conversations ORDER BY rowid"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [r[0] for r in self.query(sql)]

    # -- load reports -----------------------------------------------------------------------
    def record_load(self, source: str, report: dict[str, Any]) -> str:
        load_id = uuid.uuid4().hex[:12]
        with self._conn() as db:
            db.execute(
                "INSERT INTO loads VALUES (?,?,?,?)",
                (load_id, source, json.dumps(report, ensure_ascii=False, default=str), time.time()),
            )
        return load_id

    def load_reports(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM loads ORDER BY created_at")
        return [
            {"load_id": r["load_id"], "source": r["source"], **json.loads(r["report"])}
            for r in rows
        ]

    # -- candidates -------------------------------------------------------------------------
    def put_candidate(
        self,
        conversation_id: str,
        generator_id: str,
        sample_index: int,
        result: GenerationResult,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Upsert one candidate. A done row is never overwritten by a failure."""
        status = "done" if result.ok else "failed"
        with self._conn() as db:
            db.execute(
                """
                INSERT INTO candidates (conversation_id, generator_id, sample_index, model, params,
                    status, text, prompt_tokens, completion_tokens, latency_s, finish_reason, error,
                    attempts, updated_at)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1,?)
                ON CONFLICT (conversation_id, generator_id, sample_index) DO UPDATE SET
                    model=excluded.model, params=excluded.params, status=excluded.status,
                    text=excluded.text, prompt_tokens=excluded.prompt_tokens,
                    completion_tokens=excluded.completion_tokens, latency_s=excluded.latency_s,
                    finish_reason=excluded.finish_reason, error=excluded.error,
                    attempts=candidates.attempts + 1, updated_at=excluded.updated_at
                WHERE candidates.status != 'done'
                """,
                (
                    conversation_id,
                    generator_id,
                    sample_index,
                    result.model,
                    json.dumps(params or {}),
                    status,
                    result.text,
                    result.prompt_tokens,
                    result.completion_tokens,
                    result.latency_s,
                    result.finish_reason,
                    mask_tokens(result.error) if result.error else result.error,
                    time.time(),
                ),
            )

    def candidate_states(self, generator_id: str) -> dict[tuple[str, int], tuple[str, int]]:
        """``(conversation_id, sample_index) -> (status, attempts)`` for one generator."""
        rows = self.query(
            "SELECT conversation_id, sample_index, status, attempts FROM candidates"
            " WHERE generator_id = ?",
            (generator_id,),
        )
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def candidates_for(
        self, conversation_id: str, generator_ids: list[str] | None = None
    ) -> list[Candidate]:
        """Done candidates of one conversation, ordered by the given generators then sample."""
        rows = self.query(
            "SELECT conversation_id, generator_id, sample_index, model, text FROM candidates"
            " WHERE conversation_id = ? AND status = 'done' ORDER BY generator_id, sample_index",
            (conversation_id,),
        )
        cands = [Candidate(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        if generator_ids is not None:
            rank = {g: i for i, g in enumerate(generator_ids)}
            cands = [c for c in cands if c.generator_id in rank]
            cands.sort(key=lambda c: (rank[c.generator_id], c.sample_index))
        return cands

    def candidate_rows(self, generator_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM candidates"
        params: tuple[Any, ...] = ()
        if generator_id is not None:
            sql += " WHERE generator_id = ?"
            params = (generator_id,)
        return [dict(r) for r in self.query(sql + " ORDER BY rowid", params)]

    def candidate_counts(self) -> dict[str, dict[str, int]]:
        """``generator_id -> {done, failed, output_tokens}``."""
        rows = self.query(
            "SELECT generator_id, status, COUNT(*), COALESCE(SUM(completion_tokens), 0)"
            " FROM candidates GROUP BY generator_id, status"
        )
        out: dict[str, dict[str, int]] = {}
        for gen, status, n, toks in rows:
            entry = out.setdefault(gen, {"done": 0, "failed": 0, "output_tokens": 0})
            entry[status] = n
            entry["output_tokens"] += toks
        return out

    # -- judgments --------------------------------------------------------------------------
    def put_judgment(
        self,
        conversation_id: str,
        judge_id: str,
        *,
        model: str,
        candidate_keys: list[str],
        ratings: list[float | None],
        rationales: list[str | None],
        order_shown: list[int],
        seed: int | None,
        raw_output: str | None,
        error: str | None,
        status: str | None = None,
    ) -> None:
        """Upsert a judgment. ``status``: done (every rating readable), partial (some ratings
        null, reasons in ``error``) or failed (no usable output). Attempts always count; the
        content is replaced only by an attempt at least as good (failed < partial < done), unless
        the candidate set changed."""
        if status is None:
            status = "done" if error is None else "failed"
        rank = {"failed": 0, "partial": 1, "done": 2}
        now = time.time()
        values = (
            model,
            status,
            json.dumps(candidate_keys),
            json.dumps(ratings),
            json.dumps(rationales, ensure_ascii=False),
            json.dumps(order_shown),
            seed,
            raw_output,
            mask_tokens(error) if error else error,
            now,
        )
        with self._conn() as db:
            old = db.execute(
                "SELECT status, candidate_keys FROM judgments"
                " WHERE conversation_id = ? AND judge_id = ?",
                (conversation_id, judge_id),
            ).fetchone()
            if old is None:
                db.execute(
                    "INSERT INTO judgments (conversation_id, judge_id, model, status,"
                    " candidate_keys, ratings, rationales, order_shown, seed, raw_output, error,"
                    " attempts, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?)",
                    (conversation_id, judge_id, *values),
                )
            elif rank[status] >= rank[old[0]] or json.loads(old[1]) != candidate_keys:
                db.execute(
                    "UPDATE judgments SET model=?, status=?, candidate_keys=?, ratings=?,"
                    " rationales=?, order_shown=?, seed=?, raw_output=?, error=?,"
                    " updated_at=?, attempts=attempts + 1"
                    " WHERE conversation_id = ? AND judge_id = ?",
                    (*values, conversation_id, judge_id),
                )
            else:
                db.execute(
                    "UPDATE judgments SET attempts = attempts + 1, updated_at = ?"
                    " WHERE conversation_id = ? AND judge_id = ?",
                    (now, conversation_id, judge_id),
                )

    @staticmethod
    def _judgment_row(r: sqlite3.Row) -> dict[str, Any]:
        d = dict(r)
        for k in ("candidate_keys", "ratings", "rationales", "order_shown"):
            d[k] = json.loads(d[k])
        return d

    def judgment_states(self, judge_id: str) -> dict[str, tuple[str, int, list[str]]]:
        """``conversation_id -> (status, attempts, candidate_keys)`` for one judge."""
        rows = self.query(
            "SELECT conversation_id, status, attempts, candidate_keys FROM judgments"
            " WHERE judge_id = ?",
            (judge_id,),
        )
        return {r[0]: (r[1], r[2], json.loads(r[3])) for r in rows}

    def judgment(self, conversation_id: str, judge_id: str | None = None) -> dict[str, Any] | None:
        sql = "SELECT * FROM judgments WHERE conversation_id = ?"
        params: list[Any] = [conversation_id]
        if judge_id is not None:
            sql += " AND judge_id = ?"
            params.append(judge_id)
        rows = self.query(sql + " ORDER BY updated_at DESC LIMIT 1", params)
        return self._judgment_row(rows[0]) if rows else None

    def judgments(self, judge_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM judgments"
        params: tuple[Any, ...] = ()
        if judge_id is not None:
            sql += " WHERE judge_id = ?"
            params = (judge_id,)
        return [self._judgment_row(r) for r in self.query(sql + " ORDER BY rowid", params)]

    # -- reviews ----------------------------------------------------------------------------
    def put_review(
        self,
        conversation_id: str,
        reviewer: str,
        source: str = "ui",
        *,
        ratings: dict[str, int] | None = None,
        chosen: str | None = None,
        rejected: str | None = None,
        discard: bool = False,
        comment: str | None = None,
        accepted_ai: bool = False,
        expected_version: str | None = None,
    ) -> None:
        """Upsert one reviewer's latest review of a conversation.

        ``accepted_ai``: the reviewer submitted the AI's suggested ratings untouched (counted apart
        from human judgments in stats and the dataset card).
        ``expected_version``: the ``review_version`` the reviewer's view was rendered from; if the
        conversation changed since (new candidates or judgment, or this reviewer's review saved
        from another tab), ``StaleReviewError`` and nothing is written (issue 10)."""
        with self._conn() as db:
            if expected_version is not None:
                now_version = self._review_version(db, conversation_id, reviewer, source)
                if now_version != expected_version:
                    raise StaleReviewError(conversation_id)
            db.execute(
                """
                INSERT INTO reviews (conversation_id, reviewer, source, ratings, chosen, rejected,
                    discard, comment, updated_at, accepted_ai)
                VALUES (?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT (conversation_id, reviewer, source) DO UPDATE SET
                    ratings=excluded.ratings, chosen=excluded.chosen, rejected=excluded.rejected,
                    discard=excluded.discard, comment=excluded.comment,
                    updated_at=excluded.updated_at, accepted_ai=excluded.accepted_ai
                """,
                (
                    conversation_id,
                    reviewer,
                    source,
                    json.dumps(ratings or {}),
                    chosen,
                    rejected,
                    int(discard),
                    comment,
                    time.time(),
                    int(accepted_ai),
                ),
            )

    @staticmethod
    def _review_version(
        db: sqlite3.Connection, conversation_id: str, reviewer: str, source: str
    ) -> str:
        parts = []
        for sql, params in (
            (
                "SELECT COUNT(*), MAX(updated_at) FROM candidates WHERE conversation_id = ?",
                (conversation_id,),
            ),
            (
                "SELECT COUNT(*), MAX(updated_at) FROM judgments WHERE conversation_id = ?",
                (conversation_id,),
            ),
            (
                "SELECT COUNT(*), MAX(updated_at) FROM reviews"
                " WHERE conversation_id = ? AND reviewer = ? AND source = ?",
                (conversation_id, reviewer, source),
            ),
        ):
            n, latest = db.execute(sql, params).fetchone()
            parts.append(f"{n}@{latest!r}")
        return "|".join(parts)

    def review_version(self, conversation_id: str, reviewer: str, source: str = "ui") -> str:
        """What a review view was rendered from: candidates, judgment and this reviewer's
        review of the conversation (changes whenever any of them is written)."""
        return self._review_version(self._connection(), conversation_id, reviewer, source)

    def reviews(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM reviews"
        params: tuple[Any, ...] = ()
        if conversation_id is not None:
            sql += " WHERE conversation_id = ?"
            params = (conversation_id,)
        out = []
        for r in self.query(sql + " ORDER BY updated_at", params):
            d = dict(r)
            d["ratings"] = json.loads(d["ratings"])
            d["discard"] = bool(d["discard"])
            d["accepted_ai"] = bool(d["accepted_ai"])
            out.append(d)
        return out

    # -- jobs -------------------------------------------------------------------------------
    def start_job(self, kind: str, recipe: dict[str, Any] | None = None) -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self._conn() as db:
            db.execute(
                "INSERT INTO jobs (job_id, kind, recipe, status, counters, pid, started_at, proc)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    kind,
                    json.dumps(redact(recipe or {}), default=str),
                    "running",
                    "{}",
                    os.getpid(),
                    time.time(),
                    process_identity(),
                ),
            )
        return job_id

    def update_job(
        self,
        job_id: str,
        *,
        counters: dict[str, Any] | None = None,
        status: str | None = None,
        last_error: str | None = None,
    ) -> None:
        sets, params = [], []
        if counters is not None:
            sets.append("counters = ?")
            params.append(json.dumps(counters, default=str))
        if last_error is not None:
            sets.append("last_error = ?")
            params.append(mask_tokens(last_error))
        if status is not None:
            sets.append("status = ?")
            params.append(status)
            if status != "running":
                sets.append("finished_at = ?")
                params.append(time.time())
        if not sets:
            return
        with self._conn() as db:
            db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE job_id = ?", (*params, job_id))

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first. A 'running' job whose process is gone is reported as 'interrupted'."""
        out = []
        for r in self.query("SELECT * FROM jobs ORDER BY started_at DESC LIMIT ?", (limit,)):
            d = dict(r)
            d["recipe"] = json.loads(d["recipe"])
            d["counters"] = json.loads(d["counters"])
            if d["status"] == "running" and not _job_alive(d["pid"], d.get("proc")):
                d["status"] = "interrupted"
            out.append(d)
        return out


_BOOT_ID: str | None = None


def _boot_id() -> str:
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _BOOT_ID = f.read().strip()
        except OSError:
            _BOOT_ID = "noboot"
    return _BOOT_ID


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        return None


_PROC_NONCE = uuid.uuid4().hex[:12]


def process_identity(pid: int | None = None) -> str:
    """Who runs a job: boot id, pid and process start time (a nonce where /proc is missing)."""
    pid = pid or os.getpid()
    start = _start_time(pid)
    if start is None and pid == os.getpid():
        start = "n" + _PROC_NONCE
    return f"{_boot_id()}:{pid}:{start}"


def _job_alive(pid: int | None, proc: str | None) -> bool:
    if proc is None:  # written before the process identity existed
        return _pid_alive(pid) and pid != os.getpid()
    if not pid or not _pid_alive(pid):
        return False
    return process_identity(pid) == proc


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed child not yet reaped) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
