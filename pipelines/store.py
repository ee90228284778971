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
    # 3 (issue 14): pairwise (arena) review. ``pairwise_pairs`` is the precomputed queue: one
    # informative pair per conversation and reason (ai_tie | top2 | disagree | random), its key
    # ordered (key_1 < key_2); the next pair is one indexed lookup. ``pairwise_reviews`` holds
    # each reviewer's verdict on a pair with the blind side shown on the left (A), so a verdict
    # maps back to candidate keys. Judgments gain their token counts (cost accounting).
    """
    CREATE TABLE IF NOT EXISTS pairwise_pairs (
        reason TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        key_1 TEXT NOT NULL,
        key_2 TEXT NOT NULL,
        priority REAL NOT NULL DEFAULT 0,  -- lower is shown first (e.g. the AI's margin)
        rand INTEGER NOT NULL DEFAULT 0,   -- stable per-conversation shuffle
        n_seen INTEGER NOT NULL DEFAULT 0, -- verdicts including skips
        n_verdicts INTEGER NOT NULL DEFAULT 0, -- verdicts other than skip
        source_at REAL NOT NULL DEFAULT 0, -- updated_at of the judgment/candidates it came from
        PRIMARY KEY (reason, conversation_id)
    );
    CREATE INDEX IF NOT EXISTS pairwise_pairs_next
        ON pairwise_pairs (reason, n_seen, priority, rand);
    CREATE INDEX IF NOT EXISTS pairwise_pairs_pair
        ON pairwise_pairs (conversation_id, key_1, key_2);
    CREATE TABLE IF NOT EXISTS pairwise_reviews (
        conversation_id TEXT NOT NULL,
        key_1 TEXT NOT NULL,
        key_2 TEXT NOT NULL,
        reviewer TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'ui', -- ui | argilla
        left_key TEXT NOT NULL,            -- the candidate shown as A
        verdict TEXT NOT NULL,             -- a | b | tie | both_bad | skip
        winner TEXT,                       -- candidate key of the winner (a / b), else NULL
        reason TEXT,                       -- which queue served the pair
        updated_at REAL NOT NULL,
        PRIMARY KEY (conversation_id, key_1, key_2, reviewer, source)
    );
    CREATE INDEX IF NOT EXISTS pairwise_reviews_reviewer ON pairwise_reviews (reviewer);
    ALTER TABLE judgments ADD COLUMN prompt_tokens INTEGER;
    ALTER TABLE judgments ADD COLUMN completion_tokens INTEGER;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


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
                    result.error,
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
            error,
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
    ) -> None:
        """Upsert one reviewer's latest review of a conversation.

        ``accepted_ai``: the reviewer submitted the AI's suggested ratings untouched (counted apart
        from human judgments in stats and the dataset card)."""
        with self._conn() as db:
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

    # -- pairwise (arena) review (issue 14) ---------------------------------------------------
    def judgments_since(
        self, since: float, judge_id: str | None = None
    ) -> list[tuple[str, str, list[str], list[float | None], float]]:
        """``(conversation_id, judge_id, candidate_keys, ratings, updated_at)`` of every done or
        partial judgment updated after ``since``."""
        sql = (
            "SELECT conversation_id, judge_id, candidate_keys, ratings, updated_at FROM judgments"
            " WHERE status IN ('done', 'partial') AND updated_at > ?"
        )
        params: list[Any] = [since]
        if judge_id is not None:
            sql += " AND judge_id = ?"
            params.append(judge_id)
        return [
            (r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4])
            for r in self.query(sql + " ORDER BY conversation_id, updated_at", params)
        ]

    def done_candidate_keys_since(self, since: float) -> dict[str, tuple[list[str], float]]:
        """``conversation_id -> (done candidate keys, newest updated_at)`` for conversations
        with a candidate updated after ``since``."""
        rows = self.query(
            "SELECT conversation_id, generator_id, sample_index, updated_at FROM candidates"
            " WHERE status = 'done' AND conversation_id IN"
            " (SELECT conversation_id FROM candidates WHERE updated_at > ?)"
            " ORDER BY conversation_id, generator_id, sample_index",
            (since,),
        )
        out: dict[str, tuple[list[str], float]] = {}
        for cid, gen, idx, ts in rows:
            keys, newest = out.get(cid, ([], 0.0))
            keys.append(candidate_key(gen, idx))
            out[cid] = (keys, max(newest, ts))
        return out

    def pairwise_watermarks(self) -> dict[str, float]:
        """``reason -> newest source_at`` among the queued pairs."""
        rows = self.query("SELECT reason, MAX(source_at) FROM pairwise_pairs GROUP BY reason")
        return {r[0]: float(r[1] or 0) for r in rows}

    def put_pairwise_pairs(
        self, rows: Iterable[tuple[str, str, str, str, float, int, float]]
    ) -> int:
        """Upsert queued pairs ``(reason, conversation_id, key_1, key_2, priority, rand,
        source_at)``; their verdict counts are recomputed from the stored reviews."""
        n = 0
        batch = list(rows)
        for i in range(0, len(batch), 2000):
            with self._conn() as db:
                for row in batch[i : i + 2000]:
                    db.execute(
                        """
                        INSERT INTO pairwise_pairs (reason, conversation_id, key_1, key_2,
                            priority, rand, source_at) VALUES (?,?,?,?,?,?,?)
                        ON CONFLICT (reason, conversation_id) DO UPDATE SET
                            key_1=excluded.key_1, key_2=excluded.key_2,
                            priority=excluded.priority, rand=excluded.rand,
                            source_at=excluded.source_at
                        """,
                        row,
                    )
                    self._recount_pair(db, row[1], row[2], row[3])
                    n += 1
        return n

    @staticmethod
    def _recount_pair(db: sqlite3.Connection, cid: str, key_1: str, key_2: str) -> None:
        db.execute(
            "UPDATE pairwise_pairs SET"
            " n_seen = (SELECT COUNT(*) FROM pairwise_reviews r WHERE r.conversation_id = ?1"
            "   AND r.key_1 = ?2 AND r.key_2 = ?3),"
            " n_verdicts = (SELECT COUNT(*) FROM pairwise_reviews r WHERE r.conversation_id = ?1"
            "   AND r.key_1 = ?2 AND r.key_2 = ?3 AND r.verdict != 'skip')"
            " WHERE conversation_id = ?1 AND key_1 = ?2 AND key_2 = ?3",
            (cid, key_1, key_2),
        )

    def next_pairwise_pair(
        self, reviewer: str, reason: str, max_verdicts: int, exclude: Iterable[str] = ()
    ) -> tuple[str, str, str] | None:
        """The next queued pair of ``reason`` this reviewer has not judged, least-seen first,
        then by priority: ``(conversation_id, key_1, key_2)``. One indexed lookup."""
        skip = list(exclude)
        marks = ",".join("?" * len(skip))
        extra = f" AND p.conversation_id NOT IN ({marks})" if skip else ""
        rows = self.query(
            "SELECT p.conversation_id, p.key_1, p.key_2 FROM pairwise_pairs p"
            " WHERE p.reason = ? AND p.n_verdicts < ?" + extra + " AND NOT EXISTS"
            " (SELECT 1 FROM pairwise_reviews r WHERE r.conversation_id = p.conversation_id"
            "  AND r.key_1 = p.key_1 AND r.key_2 = p.key_2 AND r.reviewer = ?)"
            " ORDER BY p.n_seen, p.priority, p.rand LIMIT 1",
            (reason, max_verdicts, *skip, reviewer),
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def pairwise_pair_reason_count(self) -> dict[str, dict[str, int]]:
        """``reason -> {pairs, judged}`` (judged: at least one verdict other than skip)."""
        rows = self.query(
            "SELECT reason, COUNT(*), SUM(n_verdicts > 0) FROM pairwise_pairs GROUP BY reason"
        )
        return {r[0]: {"pairs": int(r[1]), "judged": int(r[2] or 0)} for r in rows}

    def put_pairwise_review(
        self,
        conversation_id: str,
        key_1: str,
        key_2: str,
        reviewer: str,
        *,
        left_key: str,
        verdict: str,
        winner: str | None,
        reason: str | None,
        source: str = "ui",
    ) -> None:
        """Upsert one reviewer's verdict on a pair (their latest one counts)."""
        with self._conn() as db:
            db.execute(
                """
                INSERT INTO pairwise_reviews (conversation_id, key_1, key_2, reviewer, source,
                    left_key, verdict, winner, reason, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT (conversation_id, key_1, key_2, reviewer, source) DO UPDATE SET
                    left_key=excluded.left_key, verdict=excluded.verdict,
                    winner=excluded.winner, reason=excluded.reason,
                    updated_at=excluded.updated_at
                """,
                (
                    conversation_id,
                    key_1,
                    key_2,
                    reviewer,
                    source,
                    left_key,
                    verdict,
                    winner,
                    reason,
                    time.time(),
                ),
            )
            self._recount_pair(db, conversation_id, key_1, key_2)

    def pairwise_reviews(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Pairwise verdicts (oldest first), optionally of one conversation."""
        sql = "SELECT * FROM pairwise_reviews"
        params: tuple[Any, ...] = ()
        if conversation_id is not None:
            sql += " WHERE conversation_id = ?"
            params = (conversation_id,)
        return [dict(r) for r in self.query(sql + " ORDER BY updated_at", params)]

    def pairwise_progress(self, reviewer: str | None = None) -> dict[str, int]:
        """``{verdicts, skips, mine, conversations}`` over the pairwise reviews."""
        row = self.query(
            "SELECT SUM(verdict != 'skip'), SUM(verdict = 'skip'), SUM(reviewer = ?),"
            " COUNT(DISTINCT conversation_id) FROM pairwise_reviews",
            (reviewer or "",),
        )[0]
        return {
            "verdicts": int(row[0] or 0),
            "skips": int(row[1] or 0),
            "mine": int(row[2] or 0),
            "conversations": int(row[3] or 0),
        }

    def candidate_texts(self, conversation_id: str, keys: Iterable[str]) -> dict[str, Candidate]:
        """Done candidates of one conversation by key (primary-key lookups)."""
        out: dict[str, Candidate] = {}
        for key in keys:
            gen, _, idx = key.rpartition("/")
            if not idx.isdigit():
                continue
            rows = self.query(
                "SELECT conversation_id, generator_id, sample_index, model, text FROM candidates"
                " WHERE conversation_id = ? AND generator_id = ? AND sample_index = ?"
                " AND status = 'done'",
                (conversation_id, gen, int(idx)),
            )
            if rows:
                r = rows[0]
                out[key] = Candidate(r[0], r[1], r[2], r[3], r[4])
        return out

    # -- tokens and cost (issue 14) ---------------------------------------------------------
    def set_judgment_usage(
        self,
        conversation_id: str,
        judge_id: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> None:
        """Record the tokens a judgment used (summed over its passes and retries)."""
        with self._conn() as db:
            db.execute(
                "UPDATE judgments SET prompt_tokens = ?, completion_tokens = ?"
                " WHERE conversation_id = ? AND judge_id = ?",
                (prompt_tokens, completion_tokens, conversation_id, judge_id),
            )

    def token_usage(self) -> list[dict[str, Any]]:
        """Tokens per stage and model: ``[{stage, id, model, rows, prompt_tokens,
        completion_tokens}]`` (generate: per generator; judge: per judge)."""
        out = []
        for stage, table, col in (
            ("generate", "candidates", "generator_id"),
            ("judge", "judgments", "judge_id"),
        ):
            rows = self.query(
                f"SELECT {col}, model, COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
                f" COALESCE(SUM(completion_tokens), 0) FROM {table}"
                f" GROUP BY {col}, model ORDER BY {col}, model"
            )
            for ident, model, n, p, c in rows:
                out.append(
                    {
                        "stage": stage,
                        "id": ident,
                        "model": model,
                        "rows": int(n),
                        "prompt_tokens": int(p),
                        "completion_tokens": int(c),
                    }
                )
        return out

    # -- jobs -------------------------------------------------------------------------------
    def start_job(self, kind: str, recipe: dict[str, Any] | None = None) -> str:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        with self._conn() as db:
            db.execute(
                "INSERT INTO jobs (job_id, kind, recipe, status, counters, pid, started_at)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    job_id,
                    kind,
                    json.dumps(redact(recipe or {}), default=str),
                    "running",
                    "{}",
                    os.getpid(),
                    time.time(),
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
            if d["status"] == "running" and not _pid_alive(d["pid"]):
                d["status"] = "interrupted"
            out.append(d)
        return out


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
