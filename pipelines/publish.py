"""Export binarized pairs to a Hub-ready folder and push it to the Hugging Face Hub.

Folder layout (what ``export_local`` writes and ``push_to_hub`` uploads)::

    README.md                              dataset card (YAML metadata + body)
    data/train-00000-of-00001.parquet      the pairs (when "parquet" in formats)
    data/train-00000-of-00001.jsonl        the pairs (when "jsonl" in formats)

Nothing secret reaches the folder: the recipe and every other user-provided value in the card
goes through ``pipelines.secrets.redact``.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.binarize import (
    COLUMNS,
    DROP_REASONS,
    BinarizeResult,
    arrow_schema,
    pairs_to_table,
)
from pipelines.errors import error_line
from pipelines.secrets import redact

if TYPE_CHECKING:
    from pipelines.profiles import ExportFilters

DATA_STEM = "train-00000-of-00001"
TEMPLATE_DIR = Path(__file__).parent / "templates"
CARD_TEMPLATE = "dataset_card.md.jinja"
SMALL_JUDGE_PATTERN = re.compile(r"smollm2?[-_ ]?135m|135m[-_ ]instruct", re.IGNORECASE)
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class PublishError(RuntimeError):
    """A one-line, token-free reason why exporting or publishing failed."""


@dataclass
class CardContext:
    """What the dataset card says about how the data was built."""

    dataset_name: str = "capyui-dpo"
    recipe: dict[str, Any] = field(default_factory=dict)
    load_reports: list[dict[str, Any]] = field(default_factory=list)
    stage_counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    generator_models: list[str] = field(default_factory=list)
    judge_model: str | None = None
    dropped: Mapping[str, int] = field(default_factory=dict)
    strategy: str = "best-vs-worst"
    license: str = "apache-2.0"
    language: list[str] = field(default_factory=lambda: ["en"])
    repo_id: str | None = None
    reviewed: int = 0
    # export profile (pipelines.profiles.PROFILES) and export filters with their counts
    profile: str = "capyui"
    filters: dict[str, Any] = field(default_factory=dict)
    filter_counts: dict[str, int] = field(default_factory=dict)
    # human reviews, and how many of them submitted the AI's suggestion untouched
    human_reviews: int = 0
    accepted_ai: int = 0
    # the judge prompt template ("ultrafeedback": the original rubric, from distilabel)
    judge_template: str | None = None
    # issue 14: tokens and cost per stage and model (cost.usage_report rows); pairwise verdicts
    usage: list[dict[str, Any]] = field(default_factory=list)
    pairwise: list[dict[str, Any]] = field(default_factory=list)
    # issue 14: a judge panel's biases and agreement (panel.PanelReport.as_dict()), or None
    panel: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------------------------
# Columns worth a Parquet dictionary / min-max statistics: the short, repetitive ones. The free
# text columns (messages, generations, rationales) are unique per row: a dictionary there is
# built and then abandoned, and min/max of long texts prunes nothing, yet both cost CPU on every
# value. The values written are the same either way.
DICTIONARY_COLUMNS = (
    "source",
    "generation_models",
    "rating_source",
    "chosen_model",
    "rejected_model",
    "judge_model",
)
STATISTICS_COLUMNS = (
    *DICTIONARY_COLUMNS,
    "conversation_id",
    "ratings",
    "rating_chosen",
    "rating_rejected",
)
JSONL_BATCH_ROWS = 4096

PairsLike = Any  # a BinarizeResult, a pyarrow.Table or a sequence of pair dicts


def as_table(pairs: PairsLike, extra_fields: Sequence[Any] = ()) -> Any:
    """A ``pyarrow.Table`` (``arrow_schema()``, plus ``extra_fields`` the table carries, e.g. a
    judge panel's per-judge ratings) of a ``BinarizeResult``, a table or pair dicts."""
    import pyarrow as pa

    if isinstance(pairs, BinarizeResult):
        return pairs.table
    if isinstance(pairs, pa.Table):
        schema = arrow_schema()
        for f in extra_fields:
            schema = schema.append(f)
        if pairs.schema != schema:
            pairs = pairs.select(schema.names).cast(schema)
        return pairs
    return pairs_to_table(pairs)


def write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(
        table,
        path,
        use_dictionary=list(DICTIONARY_COLUMNS),
        write_statistics=list(STATISTICS_COLUMNS),
    )


def _write_jsonl(pairs: PairsLike, path: Path, extra_fields: Sequence[Any] = ()) -> None:
    """One JSON object per pair, keys in ``COLUMNS`` order (from Arrow batches for a table),
    then the ``extra_fields`` columns."""
    rows: Iterable[Mapping[str, Any]]
    names = (*COLUMNS, *(fld.name for fld in extra_fields))
    if isinstance(pairs, Sequence) and not isinstance(pairs, str):
        rows = pairs
    else:
        table = as_table(pairs, extra_fields)
        rows = (r for batch in table.to_batches(JSONL_BATCH_ROWS) for r in batch.to_pylist())
    try:
        import orjson

        with path.open("wb") as f:
            for p in rows:
                f.write(orjson.dumps({c: p[c] for c in names}))
                f.write(b"\n")
    except ImportError:
        with path.open("w", encoding="utf-8") as f:
            for p in rows:
                f.write(json.dumps({c: p[c] for c in names}, ensure_ascii=False))
                f.write("\n")


# ---------------------------------------------------------------------------------------------
# dataset card
# ---------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~<>])")


def md_escape(value: Any) -> str:
    """Inline markdown text: HTML-escaped, markdown syntax backslash-escaped, one line."""
    text = " ".join(str(value).split())
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = html.escape(text, quote=False).replace("\\&lt;", "&lt;").replace("\\&gt;", "&gt;")
    if text[:1] in "-=":
        text = "\\" + text
    return text


def md_cell(value: Any) -> str:
    """A markdown table cell (``md_escape`` covers the pipe and newlines)."""
    return "" if value is None else md_escape(value)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for bound, label in bounds:
        if n < bound:
            return label
    return "n>1T" if n >= 1_000_000_000_000 else "1B<n<10B"


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _load_rows(reports: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    rows: list[tuple[str, str, Any]] = []
    for rep in reports:
        source = rep.get("source", "")
        for key, value in rep.items():
            if key in ("source", "load_id"):
                continue
            if isinstance(value, Mapping):
                for sub, v in value.items():
                    if isinstance(v, (int, float, str, bool)) or v is None:
                        rows.append((source, f"{key}.{sub}", v))
            elif isinstance(value, (int, float, str, bool)) or value is None:
                rows.append((source, key, value))
    return rows


def is_small_judge(judge_model: str | None, recipe: Mapping[str, Any] | None = None) -> bool:
    """True when the judge is the embedded SmolLM2-135M model."""
    if judge_model and SMALL_JUDGE_PATTERN.search(judge_model):
        return True
    judge = (recipe or {}).get("judge")
    return isinstance(judge, Mapping) and judge.get("backend") == "embedded"


def render_card(card: CardContext, n_rows: int, data_files: Sequence[str]) -> str:
    import jinja2
    import yaml

    safe: CardContext = CardContext(**redact(card.__dict__))  # every user value, redacted
    safe.dropped = {k: int(v) for k, v in (redact(dict(card.dropped)) or {}).items()}
    recipe_yaml = yaml.safe_dump(
        redact(card.recipe), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    parquet = [f for f in data_files if f.endswith(".parquet")]
    main_files = parquet or list(data_files)
    pattern = "data/train-*" + (Path(main_files[0]).suffix if main_files else ".parquet")
    metadata = {
        "license": safe.license,
        "language": list(safe.language),
        "task_categories": ["text-generation"],
        "tags": ["dpo", "preference", "synthetic", "capyui", "ultrafeedback", "multi-turn"],
        "size_categories": [size_category(n_rows)],
        "pretty_name": safe.dataset_name,
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": pattern}],
            }
        ],
    }
    metadata_yaml = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    dropped = [(k, safe.dropped.get(k, 0)) for k in DROP_REASONS]
    dropped += [(k, v) for k, v in safe.dropped.items() if k not in DROP_REASONS]
    repo_literal = (
        safe.repo_id
        if safe.repo_id and REPO_ID_PATTERN.match(safe.repo_id)
        else "your-name/your-dataset"
    )
    stats = safe.stats or {}
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=False,  # markdown: every user value goes through the md / cell filters
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(md=md_escape, cell=md_cell, num=_num, pct=_pct)
    from pipelines.profiles import LOADING_SNIPPETS

    return env.get_template(CARD_TEMPLATE).render(
        profile=safe.profile,
        filters=[(k, v, int(safe.filter_counts.get(k, 0))) for k, v in safe.filters.items()],
        loading_snippet=LOADING_SNIPPETS.get(safe.profile, LOADING_SNIPPETS["capyui"]).format(
            repo=repo_literal
        ),
        human_reviews=int(safe.human_reviews or 0),
        accepted_ai=int(safe.accepted_ai or 0),
        judge_template=safe.judge_template,
        metadata_yaml=metadata_yaml,
        name=safe.dataset_name,
        n_generators=len(safe.generator_models),
        generator_models=safe.generator_models,
        judge_model=safe.judge_model,
        small_judge=is_small_judge(card.judge_model, card.recipe),
        reviewed=int(safe.reviewed or 0),
        strategy=safe.strategy,
        stage_counts=[*safe.stage_counts.items(), ("pairs kept", n_rows)],
        load_rows=_load_rows(safe.load_reports),
        dropped=dropped,
        models=stats.get("models", []),
        agreement=stats.get("agreement"),
        usage=list(safe.usage or []),
        pairwise=list(safe.pairwise or []),
        panel=safe.panel,
        repo_id_literal=repo_literal,
        recipe_yaml=recipe_yaml,
        recipe_fence=_fence(recipe_yaml),
    )


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def _export_options(formats: Sequence[str], profile: str, filters: Any) -> ExportFilters | None:
    """Check an export's ``formats`` and ``profile`` (``PublishError``); ``filters`` as
    ``profiles.ExportFilters`` (a mapping is validated) or None."""
    from pipelines.profiles import PROFILES, ExportFilters

    unknown = set(formats) - {"parquet", "jsonl"}
    if unknown or not formats:
        raise PublishError(f"unknown export format(s): {sorted(unknown) or 'none given'}")
    if profile not in PROFILES:
        raise PublishError(
            f"unknown export profile {profile!r}: expected one of {', '.join(PROFILES)}"
        )
    if isinstance(filters, Mapping):
        filters = ExportFilters.model_validate(filters)
    return filters


def export_local(
    result_pairs: PairsLike,
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("parquet", "jsonl"),
    card: CardContext,
    profile: str = "capyui",
    filters: Any = None,
    row_sources: Mapping[str, str] | None = None,
    extra_fields: Sequence[Any] = (),
) -> Path:
    """Write the pairs and the dataset card into ``out_dir`` (see the module docstring).

    ``result_pairs`` is a ``BinarizeResult`` (its Arrow table is written as it is: the fast
    path), a ``pyarrow.Table`` of ``arrow_schema()``, or a sequence of pair dicts.
    Earlier ``data/train-*`` files there are replaced. Returns ``out_dir``.

    ``profile`` (``pipelines.profiles.PROFILES``) picks the columns; ``filters``
    (``profiles.ExportFilters``) drop pairs at export, their counts go into the card."""
    from pipelines.profiles import apply_filters, to_profile

    filters = _export_options(formats, profile, filters)
    card.profile = profile
    if filters is not None and filters.active():
        table, counts = apply_filters(as_table(result_pairs, extra_fields), filters)
        card.filters = filters.active()
        card.filter_counts = counts
        result_pairs = table
    if profile != "capyui":
        table = to_profile(as_table(result_pairs), profile, row_sources=row_sources)
        return _export_table(table, Path(out_dir), formats, card)
    out = Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*"):
        old.unlink()
    written: list[str] = []
    n_rows = (
        result_pairs.num_pairs
        if isinstance(result_pairs, BinarizeResult)
        else len(result_pairs)  # a pyarrow.Table or a sequence
    )
    if "parquet" in formats:
        path = data / f"{DATA_STEM}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        write_parquet(as_table(result_pairs, extra_fields), tmp)
        tmp.replace(path)
        written.append(f"data/{path.name}")
    if "jsonl" in formats:
        path = data / f"{DATA_STEM}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        _write_jsonl(result_pairs, tmp, extra_fields)
        tmp.replace(path)
        written.append(f"data/{path.name}")
    (out / "README.md").write_text(render_card(card, n_rows, written), encoding="utf-8")
    return out


def _export_table(table: Any, out: Path, formats: Sequence[str], card: CardContext) -> Path:
    """Write a profile's table (any schema) and the card, like ``export_local``."""
    import pyarrow.parquet as pq

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*"):
        old.unlink()
    written: list[str] = []
    if "parquet" in formats:
        path = data / f"{DATA_STEM}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        written.append(f"data/{path.name}")
    if "jsonl" in formats:
        path = data / f"{DATA_STEM}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for batch in table.to_batches(JSONL_BATCH_ROWS):
                for row in batch.to_pylist():
                    f.write(json.dumps(row, ensure_ascii=False))
                    f.write("\n")
        tmp.replace(path)
        written.append(f"data/{path.name}")
    (out / "README.md").write_text(render_card(card, table.num_rows, written), encoding="utf-8")
    return out


def export_local_stream(
    tables: Iterable[Any],
    out_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] = ("parquet", "jsonl"),
    card: Callable[[int], CardContext],
    profile: str = "capyui",
    filters: Any = None,
    extra_fields: Sequence[Any] = (),
) -> tuple[Path, int]:
    """``export_local`` for pairs decided chunk by chunk (issue 13): each ``pyarrow.Table`` of
    ``tables`` is appended to the Parquet file (one row group per chunk) and the JSON Lines
    file as it arrives, so memory holds one chunk whatever the dataset size. The files are
    written under temporary names and replace the old ones at the end; ``card(n_rows)`` builds
    the card once every chunk is in. Returns ``(out_dir, n_rows)``.

    An item of ``tables`` may be ``(table, row_sources)`` for the ``capybara-*`` profiles
    (``profiles.to_profile``); ``filters`` drop pairs chunk by chunk, their counts summed
    into the card, as ``export_local`` does. ``extra_fields``: Arrow fields every chunk carries
    after the CapyUI columns (issue 14: a judge panel's ``judge_ratings``), kept by the
    ``capyui`` profile."""
    import pyarrow.parquet as pq

    from pipelines.profiles import apply_filters, profile_schema, to_profile

    filters = _export_options(formats, profile, filters)
    filter_counts: dict[str, int] = {}
    out = Path(out_dir)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    pq_path, jl_path = data / f"{DATA_STEM}.parquet", data / f"{DATA_STEM}.jsonl"
    pq_tmp, jl_tmp = pq_path.with_suffix(".parquet.tmp"), jl_path.with_suffix(".jsonl.tmp")
    writer = None
    if "parquet" in formats:
        if profile == "capyui":
            schema = arrow_schema()
            for f in extra_fields:
                schema = schema.append(f)
            writer = pq.ParquetWriter(
                pq_tmp,
                schema,
                use_dictionary=list(DICTIONARY_COLUMNS),
                write_statistics=list(STATISTICS_COLUMNS),
            )
        else:
            writer = pq.ParquetWriter(pq_tmp, profile_schema(profile))
    jsonl = jl_tmp.open("wb") if "jsonl" in formats else None
    try:  # the same bytes as ``_write_jsonl``
        import orjson

        def dump(d: dict[str, Any]) -> bytes:
            return orjson.dumps(d)
    except ImportError:

        def dump(d: dict[str, Any]) -> bytes:
            return json.dumps(d, ensure_ascii=False).encode("utf-8")

    n_rows = 0
    try:
        for chunk in tables:
            chunk, row_sources = chunk if isinstance(chunk, tuple) else (chunk, None)
            table = as_table(chunk, extra_fields)
            if filters is not None and filters.active():
                table, counts = apply_filters(table, filters)
                for name, n in counts.items():
                    filter_counts[name] = filter_counts.get(name, 0) + n
            if profile != "capyui":
                table = to_profile(table, profile, row_sources=row_sources)
            n_rows += table.num_rows
            if writer is not None and table.num_rows:
                writer.write_table(table)
            if jsonl is not None:
                names = (
                    (*COLUMNS, *(f.name for f in extra_fields))
                    if profile == "capyui"
                    else table.column_names
                )
                for batch in table.to_batches(JSONL_BATCH_ROWS):
                    for p in batch.to_pylist():
                        jsonl.write(dump({c: p[c] for c in names}) + b"\n")
    finally:
        if writer is not None:
            writer.close()
        if jsonl is not None:
            jsonl.close()
    for old in data.glob("train-*"):
        if old not in (pq_tmp, jl_tmp):
            old.unlink()
    written: list[str] = []
    if writer is not None:
        pq_tmp.replace(pq_path)
        written.append(f"data/{pq_path.name}")
    if jsonl is not None:
        jl_tmp.replace(jl_path)
        written.append(f"data/{jl_path.name}")
    context = card(n_rows)
    context.profile = profile
    if filters is not None and filters.active():
        context.filters = filters.active()
        context.filter_counts = filter_counts
    (out / "README.md").write_text(render_card(context, n_rows, written), encoding="utf-8")
    return out, n_rows


# ---------------------------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------------------------
def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for mod, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        try:
            errors.append(getattr(__import__(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def existing_files(api: Any, repo_id: str) -> list[str] | None:
    """The files of dataset ``repo_id`` (None when it does not exist or is not visible)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        info = api.dataset_info(repo_id)
    except RepositoryNotFoundError:
        return None
    except HfHubHTTPError as err:
        if getattr(getattr(err, "response", None), "status_code", None) == 404:
            return None
        raise
    return sorted(s.rfilename for s in (info.siblings or []))


def push_to_hub(
    out_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    endpoint: str | None = None,
    commit_message: str = "Upload preference dataset (CapyUI)",
    overwrite: bool = True,
) -> str:
    """Create the dataset repo (private by default, ``exist_ok``) and upload ``out_dir`` to it.
    Returns the repo URL. Raises ``PublishError`` with a one-line, token-free message.

    ``overwrite=False``: a dataset that already exists is left alone and the error says which
    of its files the upload would replace (the app asks for an explicit confirmation).
    On a Space the server's ``HF_TOKEN`` is never a fallback: the caller passes the signed-in
    user's token (issue 10)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    if not token and not os.environ.get("SPACE_ID"):
        token = os.environ.get("HF_TOKEN") or None
    if not token:
        raise PublishError(
            "no Hugging Face token: pass one or set HF_TOKEN (a token with write access)"
        )
    folder = Path(out_dir)
    if not (folder / "README.md").is_file():
        raise PublishError(f"nothing to publish in {folder}: export the dataset first")
    if not REPO_ID_PATTERN.match(repo_id):
        raise PublishError(f"invalid repo id {repo_id!r}: expected 'namespace/name'")
    where = endpoint or "the Hugging Face Hub"
    api = HfApi(endpoint=endpoint, token=token)
    try:
        if not overwrite:
            existing = existing_files(api, repo_id)
            if existing is not None:
                replaced = [f for f in existing if f == "README.md" or f.startswith("data/")]
                shown = ", ".join(replaced[:6]) + (" …" if len(replaced) > 6 else "")
                raise PublishError(
                    f"dataset {repo_id} already exists on {where} ({len(existing)} file(s)); "
                    f"publishing replaces {shown or 'nothing but adds files'}: confirm to "
                    "overwrite it"
                )
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=commit_message,
            allow_patterns=["README.md", "data/*"],
        )
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            raise PublishError(
                f"{where} rejected the token (HTTP 401): check HF_TOKEN is a valid token"
            ) from None
        if status == 403:
            raise PublishError(
                f"no write access to dataset {repo_id} on {where} (HTTP 403): use a token with"
                " write permission for that namespace"
            ) from None
        detail = error_line(err, limit=200, secret=token or None)
        raise PublishError(f"{where} refused the upload (HTTP {status}): {detail}") from None
    except HFValidationError as err:
        detail = error_line(err, limit=200, secret=token or None)
        raise PublishError(f"invalid repo id {repo_id!r}: {detail}") from None
    except _transport_errors() as err:
        raise PublishError(
            f"cannot reach {where} ({type(err).__name__}): check the network connection"
        ) from None
    return str(url)
