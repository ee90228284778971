"""The ``capyui`` command: a thin layer over ``pipelines``.

    capyui run RECIPE [--data-dir DIR] [--limit N] [--stages load,generate,...] [--json]
    capyui load SOURCE [--format F] [--column logical=actual] [--data-dir DIR] [--json]
    capyui status [--data-dir DIR] [--json]
    capyui export [--data-dir DIR] --out PATH [--format parquet|jsonl] [--recipe RECIPE]
    capyui serve [--host H] [--port P] [--data-dir DIR]

Bad input exits non-zero with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from pipelines.errors import error_line
from pipelines.secrets import configure_logging
from pipelines.types import Progress

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
EXIT_PAUSED = 3  # issue 14: a budget paused the job; raise it and run again to resume


class CliError(Exception):
    pass


def _service(args: argparse.Namespace) -> Any:
    """The workspace service of ``--data-dir`` (``pipelines.service``), which checks every
    operation against the CLI user's role like the app's."""
    from pipelines.service import WorkspaceService

    return WorkspaceService(args.data_dir)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def _fmt_progress(p: Progress) -> str:
    eta = "" if p.eta_s is None else f" eta {p.eta_s:.0f}s"
    rate = f" {p.tokens_per_s:.1f} tok/s" if p.output_tokens else ""
    fail = f" failed {p.failed}" if p.failed else ""
    msg = f" | {p.message}" if p.message and p.message not in ("finished", "starting") else ""
    return f"[{p.stage}] {p.done}/{p.total}{fail}{rate}{eta}{msg}"


def _authorize(*actions: str) -> None:
    """The CLI's user holds the shell (and the workspace files): the owner. Checked through the
    same table as the app's events (``pipelines.workspace``)."""
    from pipelines.workspace import CLI_ACTOR, authorize

    for action in actions:
        authorize(CLI_ACTOR, action)


def cmd_run(args: argparse.Namespace) -> int:
    from pipelines.recipe import load_recipe
    from pipelines.run import parse_stages
    from pipelines.workspace import CLI_ACTOR

    recipe = load_recipe(args.recipe)
    if args.profile:
        recipe.export.profile = args.profile
    stages = parse_stages(args.stages, recipe)
    _authorize("run_jobs", *(["publish"] if "publish" in stages else []))
    service = _service(args)
    store = service.store
    cancel = threading.Event()

    def on_sigterm(signum: int, frame: Any) -> None:
        cancel.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    if args.dry_run:  # issue 14: load (free, idempotent), then project tokens and cost
        return _dry_run(args, recipe, store, stages)
    last_line = [""]

    def on_progress(p: Progress) -> None:
        if args.json:
            _print_json({"event": "progress", **p.as_dict()})
            return
        line = _fmt_progress(p)
        if line != last_line[0]:
            last_line[0] = line
            print(line, file=sys.stderr, flush=True)

    try:
        summary = service.run(
            CLI_ACTOR, recipe, stages, limit=args.limit, on_progress=on_progress, cancel=cancel
        )
    except KeyboardInterrupt:
        print(
            "interrupted: everything finished so far is saved; run again to resume", file=sys.stderr
        )
        return 130
    if args.json:
        _print_json({"event": "summary", **summary.as_dict()})
    else:
        for stage, res in summary.results.items():
            print(f"{stage}: {_summarise(stage, res)}")
        if summary.export_dir:
            print(f"dataset written to {summary.export_dir}")
        if summary.published:
            print(f"published: {summary.published}")
        print(f"workspace: {store.data_dir} (job {summary.job_id}, {summary.status})")
    if summary.status == "failed":
        print(f"error: {summary.error}", file=sys.stderr)
        return EXIT_FAILED
    if summary.status == "paused":
        print(f"paused: {summary.error}", file=sys.stderr)
        return EXIT_PAUSED
    return 0


def _dry_run(args: argparse.Namespace, recipe: Any, store: Any, stages: list[str]) -> int:
    from pipelines.cost import dry_run, usage_report
    from pipelines.run import run_recipe

    if "load" in stages:
        summary = run_recipe(recipe, store, stages=["load"], limit=args.limit, job_kind="dry-run")
        if summary.status == "failed":
            print(f"error: {summary.error}", file=sys.stderr)
            return EXIT_FAILED
    proj = dry_run(recipe, store, args.limit).as_dict()
    if args.json:
        _print_json({"event": "dry_run", **proj, "spent": usage_report(store, recipe)})
        return 0
    print(
        f"{'stage':<9}{'model':<34}{'requests':>9}{'prompt tok':>12}{'compl. tok':>12}{'USD':>11}"
    )
    for r in proj["rows"]:
        cost = f"{r['usd']:.4f}" if r["priced"] else "no price"
        print(
            f"{r['stage']:<9}{(r['model'] + ' (' + r['id'] + ')')[:33]:<34}{r['requests']:>9}"
            f"{r['prompt_tokens']:>12}{r['completion_tokens']:>12}{cost:>11}"
        )
        print(f"{'':<9}prompt tokens by {r['tokens_by']}; completion by {r['completion_by']}")
    print(
        f"spent so far: ${proj['spent_usd']:.4f}, {proj['spent_tokens']} tokens · projected: "
        f"${proj['projected_usd']:.4f}, {proj['projected_tokens']} tokens · total: "
        f"${proj['total_usd']:.4f}, {proj['total_tokens']} tokens"
    )
    if "budget" in proj:
        verdict = "fits" if proj["fits_budget"] else "does NOT fit (the job will pause)"
        print(f"budget {proj['budget']}: {verdict}")
    return 0


def _summarise(stage: str, res: dict[str, Any]) -> str:
    if stage == "load":
        rej = sum(res.get("rejected", {}).values())
        extra = f", truncated: {res['truncated']}" if res.get("truncated") else ""
        return (
            f"{res.get('loaded', 0)} conversations loaded ({res.get('added', 0)} new), "
            f"{rej} rejected, {res.get('duplicates', 0)} duplicates{extra}"
        )
    if stage in ("generate", "judge"):
        return (
            f"{res['done']}/{res['total']} done, {res['failed']} failed, "
            f"{res['skipped']} already done before this run, {res['tokens_per_s']} tok/s"
        ) + "".join(f"\n  note: {n}" for n in res.get("notes", []))
    if stage == "binarize":
        return f"{res['pairs']} pairs, dropped {res['dropped']}"
    return json.dumps(res, default=str)


def cmd_load(args: argparse.Namespace) -> int:
    from pipelines.workspace import CLI_ACTOR

    columns = {}
    for spec in args.column or []:
        if "=" not in spec:
            raise CliError(f"--column takes logical=actual, got '{spec}'")
        k, v = spec.split("=", 1)
        columns[k] = v
    report = _service(args).load_file(  # streamed: one chunk in memory at a time
        CLI_ACTOR,
        args.source,
        format=args.format,
        columns=columns or None,
        split=args.split,
        limit=args.limit,
    )
    added, existing = report["added"], report["already_in_store"]
    if args.json:
        _print_json(report)
        return 0
    print(f"format: {report['format']}")
    print(f"rows read: {report['total_rows']}")
    print(f"conversations loaded: {report['loaded']} ({added} new, {existing} already in store)")
    print(f"duplicates: {report['duplicates']}")
    for reason, n in sorted(report["rejected"].items(), key=lambda kv: -kv[1]):
        examples = "; ".join(report.get("examples", {}).get(reason, [])[:2])
        print(f"rejected {reason}: {n}" + (f"  e.g. {examples}" if examples else ""))
    if report.get("truncated"):
        print(f"truncated: {report['truncated']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pipelines.workspace import CLI_ACTOR

    status = _service(args).status(CLI_ACTOR)
    if args.json:
        _print_json(status)
        return 0
    print(f"workspace: {status['data_dir']}")
    print(f"conversations: {status['conversations']}")
    for gen, c in status["candidates"].items():
        print(
            f"candidates {gen}: {c['done']} done, {c['failed']} failed, "
            f"{c['output_tokens']} output tokens"
        )
    for key, j in status["judgments"].items():
        print(f"judgments {key}: {j['count']}")
    print(f"reviews: {status['reviews']}")
    for j in status["jobs"]:
        err = f" ({j['last_error']})" if j["last_error"] else ""
        print(f"job {j['job_id']} {j['kind']}: {j['status']}{err}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.recipe import load_recipe
    from pipelines.run import export_dir_for
    from pipelines.workspace import CLI_ACTOR

    recipe = load_recipe(args.recipe)
    _authorize("export")
    recipe.export.formats = [args.format] if args.format else recipe.export.formats
    if args.profile:
        recipe.export.profile = args.profile
    if args.out:
        recipe.export.out = str(args.out)
    service = _service(args)
    store = service.store
    summary = service.run(CLI_ACTOR, recipe, ["binarize", "export"], job_kind="export")
    if summary.status == "failed":
        print(f"error: {summary.error}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"{summary.results['export']['pairs']} pairs written to "
        f"{summary.export_dir or export_dir_for(recipe, store)}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from capyui.app import launch

    launch(host=args.host, port=args.port, data_dir=args.data_dir)
    return 0


def _profile_arg(p: argparse.ArgumentParser) -> None:
    from pipelines.profiles import PROFILES

    p.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="export columns (default: the recipe's export.profile, else capyui)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capyui", description="Build multi-turn preference (DPO) datasets."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            default=None,
            help="workspace folder (default: $CAPYUI_DATA_DIR or ./capyui-data)",
        )

    p = sub.add_parser("run", help="run a recipe (headless)")
    p.add_argument("recipe", help="recipe YAML file, or the name of a bundled recipe")
    data_dir(p)
    p.add_argument("--limit", type=int, default=None, help="only the first N conversations")
    p.add_argument(
        "--stages",
        default=None,
        help="comma-separated: load,generate,judge,binarize,export,publish",
    )
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")
    _profile_arg(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="load, then print the projected tokens and cost of the rest (prices in the recipe)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("load", help="load conversations into the workspace and report")
    p.add_argument("source", help="local .jsonl/.json/.parquet/.csv file or Hub dataset id")
    p.add_argument("--format", default="auto", choices=["auto", "capybara", "messages", "sharegpt"])
    p.add_argument("--column", action="append", help="column mapping logical=actual")
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None)
    data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("status", help="what the workspace holds and its recent jobs")
    data_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("export", help="binarize and write the dataset + card")
    data_dir(p)
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--format", choices=["parquet", "jsonl"], default=None)
    p.add_argument("--recipe", default="quickstart", help="recipe (binarize options, models)")
    _profile_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="launch the web app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    data_dir(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    # composes in pipes: `capyui status | head` ends quietly
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", None) is not None and args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args))
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        from pipelines.run import is_user_error

        if not (isinstance(exc, CliError) or is_user_error(exc)):
            raise
        print(
            f"error: {error_line(exc, first_line=True)}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
