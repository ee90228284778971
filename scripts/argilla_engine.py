"""Run argilla-server 2.8.0 against osmem-server (an in-memory OpenSearch-compatible server).

Runs inside the server's own venv (``.venv-argilla``, see requirements-argilla-server.txt),
never in the app's. Used by ``scripts/argilla-local``:

    python scripts/argilla_engine.py server --host 127.0.0.1 --port 6900
    python scripts/argilla_engine.py worker --num-workers 1
    python scripts/argilla_engine.py setup [--reindex]     # migrate + owner user (+ reindex)
    python scripts/argilla_engine.py database migrate      # any other argilla_server command

Argilla's OpenSearch engine updates a record's responses and suggestions with *scripted*
updates (painless), which osmem rejects (``update with script is not supported``; an annotator's
submit would fail with HTTP 500). This module registers, under the same engine name
``opensearch``, a subclass that does those four updates as read-modify-write of the document's
``_source`` with optimistic concurrency (``if_seq_no`` / ``if_primary_term``, retried on a
version conflict); it also indexes a response that has no values (a discard sent without
any, which the API accepts but the base engine fails on). It then hands over to the regular
``argilla_server`` CLI in this process, so both the API server (uvicorn runs in-process) and
the rq workers (forked) use it.

It relies on argilla-server internals (``BaseElasticAndOpenSearchEngine`` helpers), hence the
exact pin on 2.8.0. Vector similarity search is not supported by osmem and is not used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Any

from argilla_server.constants import SEARCH_ENGINE_OPENSEARCH
from argilla_server.models import Response, Suggestion
from argilla_server.search_engine.base import SearchEngine
from argilla_server.search_engine.commons import (
    es_index_name_for_dataset,
    es_path_for_question_response,
)
from argilla_server.search_engine.opensearch import OpenSearchEngine
from opensearchpy.exceptions import ConflictError, NotFoundError

EXPECTED_SERVER_VERSION = "2.8.0"
MAX_CONFLICT_RETRIES = 20


@SearchEngine.register(engine_name=SEARCH_ENGINE_OPENSEARCH)
@dataclasses.dataclass
class ScriptlessOpenSearchEngine(OpenSearchEngine):
    """Argilla's OpenSearch engine without scripted updates (read-modify-write instead)."""

    async def _modify_source(
        self, index_name: str, doc_id: str, change: Callable[[dict[str, Any]], bool]
    ) -> None:
        """Apply ``change`` to the document's source and write it back if it returns True.

        Concurrent writers (two annotators submitting on one record) are serialised by the
        seq_no / primary_term check: a writer that lost the race re-reads and re-applies.
        """
        for attempt in range(MAX_CONFLICT_RETRIES):
            try:
                doc = await self.client.get(index=index_name, id=doc_id)
            except NotFoundError:
                return  # record not indexed (yet): nothing to update, as the script would fail
            source = doc.get("_source") or {}
            if not change(source):
                return
            kwargs: dict[str, Any] = {}
            if "_seq_no" in doc and "_primary_term" in doc:
                kwargs = {"if_seq_no": doc["_seq_no"], "if_primary_term": doc["_primary_term"]}
            try:
                await self.client.index(
                    index=index_name, id=doc_id, body=source, refresh=True, **kwargs
                )
                return
            except ConflictError:
                await asyncio.sleep(0.01 * (attempt + 1))
        raise RuntimeError(f"document {doc_id} in {index_name}: too many concurrent updates")

    @staticmethod
    def _map_record_response_to_es(response: Response) -> dict[str, Any]:
        # The base version fails on a response without values (a discard sent without any,
        # which the API accepts): HTTP 500 on submit and on re-index.
        return {
            "id": response.id,
            "status": response.status,
            "user_id": response.user_id,
            **{
                es_path_for_question_response(question): value.get("value")
                for question, value in (response.values or {}).items()
            },
        }

    async def update_record_response(self, response: Response) -> None:
        record = response.record
        es_response = self._map_record_response_to_es(response)
        response_id = str(response.id)

        def change(source: dict[str, Any]) -> bool:
            kept = [r for r in source.get("responses") or [] if str(r.get("id")) != response_id]
            source["responses"] = [*kept, es_response]
            return True

        await self._modify_source(es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def delete_record_response(self, response: Response) -> None:
        record = response.record
        response_id = str(response.id)

        def change(source: dict[str, Any]) -> bool:
            old = source.get("responses")
            if not old:
                return False
            source["responses"] = [r for r in old if str(r.get("id")) != response_id]
            return len(source["responses"]) != len(old)

        await self._modify_source(es_index_name_for_dataset(record.dataset), str(record.id), change)

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        es_suggestions = self._map_record_suggestions_to_es([suggestion])

        def change(source: dict[str, Any]) -> bool:
            source["suggestions"] = {**(source.get("suggestions") or {}), **es_suggestions}
            return True

        await self._modify_source(
            es_index_name_for_dataset(suggestion.record.dataset), str(suggestion.record_id), change
        )

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        name = suggestion.question.name

        def change(source: dict[str, Any]) -> bool:
            suggestions = source.get("suggestions") or {}
            if name not in suggestions:
                return False
            del suggestions[name]
            source["suggestions"] = suggestions
            return True

        await self._modify_source(
            es_index_name_for_dataset(suggestion.record.dataset), str(suggestion.record_id), change
        )


def _check_version() -> None:
    from argilla_server._version import __version__

    if __version__ != EXPECTED_SERVER_VERSION:
        sys.exit(
            f"argilla_engine.py needs argilla-server=={EXPECTED_SERVER_VERSION}"
            f" (found {__version__}); recreate the server venv from requirements-argilla-server.txt"
        )


def setup(reindex: bool) -> None:
    """Migrate the database, create the owner user (a no-op when it exists) and optionally
    re-index every dataset, in one process (importing argilla_server takes seconds). The
    owner's credentials come from the environment (ARGILLA_LOCAL_OWNER_*), not argv, so that
    they never show in a process list."""
    from argilla_server.cli import app

    env = os.environ
    app(["database", "migrate"], standalone_mode=False)
    app(
        [
            "database",
            "users",
            "create",
            "--username",
            env["ARGILLA_LOCAL_OWNER_USERNAME"],
            "--first-name",
            env["ARGILLA_LOCAL_OWNER_USERNAME"],
            "--role",
            "owner",
            "--password",
            env["ARGILLA_LOCAL_OWNER_PASSWORD"],
            "--api-key",
            env["ARGILLA_LOCAL_OWNER_API_KEY"],
            "--workspace",
            env["ARGILLA_LOCAL_OWNER_WORKSPACE"],
        ],
        standalone_mode=False,
    )
    if reindex:
        app(["search-engine", "reindex"], standalone_mode=False)


def main(argv: list[str]) -> None:
    _check_version()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    command, rest = argv[0], argv[1:]
    if command == "setup":
        setup(reindex="--reindex" in rest)
        return
    if command == "server":
        command = "start"
    from argilla_server.cli import app

    sys.argv = ["argilla_server", command, *rest]
    app()


if __name__ == "__main__":
    main(sys.argv[1:])
