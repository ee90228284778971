"""Binarize judged conversations into chosen / rejected preference pairs.

The package, module by module:

* ``config``: ``BinarizeConfig``, the one validated form of the options (``Recipe.binarize``);
* ``collect``: everything binarization needs from the store, as ``JudgedConversation`` rows;
* ``rules``: the rules for one conversation (strategy, thresholds, human beats AI, ties,
  pairwise verdicts), ``decide``: a drop reason or ``Decided`` (ratings, human, pairs);
* ``columnar``: ``binarize``, the rules as numpy masks, pairs straight into a ``pyarrow.Table``;
* ``reference``: ``binarize_reference``, the rules row by row: the specification the columnar
  path is tested against, and its path for input the columns cannot hold;
* ``decontaminate``: benchmark prompts (MT-Bench) that drop the conversations asking them;
* ``rows``: ``JudgedConversation`` (a conversation with its ``records.CandidateRow``,
  aligned AI ratings and ``records.Review``), ``BinarizeResult`` and the exported columns'
  schema;
* ``trl``: the rows in the shape TRL trains on.

Output rows follow TRL's conversational preference format with an explicit prompt; see
``to_trl_example`` for the exact shape TRL >= 1.x trains on. Everything public is importable
from ``pipelines.binarize``.
"""

from __future__ import annotations

from pipelines.binarize.collect import collect, collect_chunks, model_labels
from pipelines.binarize.columnar import CHUNK_ROWS, binarize, fits_columns
from pipelines.binarize.config import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    BinarizeConfig,
    BinarizeOptions,
    Strategy,
)
from pipelines.binarize.decontaminate import (
    MTBENCH,
    load_prompts,
    mtbench_prompts,
    mtbench_question_file,
    normalize_prompt,
    prompt_set,
)
from pipelines.binarize.reference import binarize_reference
from pipelines.binarize.rows import (
    COLUMNS,
    DROP_REASONS,
    BinarizeResult,
    JudgedConversation,
    arrow_schema,
    pa_concat,
    pairs_to_table,
)
from pipelines.binarize.rules import Decided, Decision, Rules, decide, stable_hash
from pipelines.binarize.trl import to_trl_example

__all__ = [
    "CHUNK_ROWS",
    "COLUMNS",
    "DEFAULT_STRATEGY",
    "DROP_REASONS",
    "Decided",
    "Decision",
    "MTBENCH",
    "STRATEGIES",
    "BinarizeConfig",
    "BinarizeOptions",
    "BinarizeResult",
    "JudgedConversation",
    "Rules",
    "Strategy",
    "arrow_schema",
    "binarize",
    "binarize_reference",
    "collect",
    "collect_chunks",
    "decide",
    "fits_columns",
    "load_prompts",
    "model_labels",
    "mtbench_prompts",
    "mtbench_question_file",
    "normalize_prompt",
    "pa_concat",
    "pairs_to_table",
    "prompt_set",
    "stable_hash",
    "to_trl_example",
]
