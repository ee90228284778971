"""The short multi-turn prompts the generation benchmarks send (same shape everywhere)."""

from __future__ import annotations

from pipelines.types import Conversation

TOPICS = [
    "tea", "rivers", "bicycles", "volcanoes", "chess", "bread", "owls", "glaciers",
    "violins", "deserts", "kites", "comets", "honey", "lighthouses", "maps", "salt",
]  # fmt: skip


def bench_conversations(n: int, tag: str = "") -> list[Conversation]:
    """``n`` distinct two-turn conversations; ``tag`` keeps runs apart (no cache hits)."""
    return [
        Conversation(
            messages=[
                {"role": "user", "content": f"I am curious about {TOPICS[i % len(TOPICS)]}."},
                {"role": "assistant", "content": "Happy to help. What would you like to know?"},
                {"role": "user", "content": f"Tell me two facts about it. ({tag}#{i})"},
            ],
            source="bench",
        )
        for i in range(n)
    ]
