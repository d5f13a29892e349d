"""`twotower export`: write a run as a new, verified SavedModel version under a base path."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a run as a versioned SavedModel with a ScaNN or brute-force index"
    )
    parser.add_argument("--run", required=True, help="run directory written by `twotower train`")
    parser.add_argument("--model-base-path", required=True, help="e.g. models/twotower")
    parser.add_argument("--version", type=int, help="default: one more than the highest existing")
    parser.add_argument("--index", choices=("scann", "brute-force"), default="scann")
    parser.add_argument("--k", type=int, default=100, help="results per query (default 100)")
    scann = parser.add_argument_group("ScaNN parameters (defaults are derived from the catalog)")
    scann.add_argument("--num-leaves", type=int)
    scann.add_argument("--num-leaves-to-search", type=int)
    scann.add_argument("--num-reordering-candidates", type=int)
    scann.add_argument("--dimensions-per-block", type=int)
    scann.add_argument("--training-iterations", type=int)
    parser.add_argument(
        "--weights",
        choices=("production", "evaluation"),
        default="production",
        help="production (default): the model fit on every interaction; evaluation: the run's "
        "evaluation weights, the only export `evaluate --saved-model` may score on test",
    )
    parser.add_argument(
        "--known-through",
        choices=("validation", "all"),
        help="history and exclusions baked for serving_default: every interaction (all, the "
        "default for production weights) or those before the test split (validation, the "
        "default for evaluation weights)",
    )
    edits = parser.add_argument_group(
        "catalog edits without retraining (docs/serving.md: Adding and removing items)"
    )
    edits.add_argument(
        "--new-items",
        metavar="FILE",
        help="CSV or Parquet of items to add, with the run's item columns (item_id, title and "
        "each item feature; multi-valued ones as lists, or '|'-separated in CSV); embedded from "
        "their features. Ids already in the catalog are refused",
    )
    edits.add_argument(
        "--remove-items",
        metavar="FILE",
        help="item ids to remove: a text file (one per line) or CSV/Parquet with item_id",
    )
    edits.add_argument(
        "--catalog-from",
        choices=("latest", "trained"),
        default="latest",
        help="apply the edits on top of the latest version of this run and weights under the "
        "base path (latest, default: earlier additions and removals carry over) or of the "
        "run's trained catalog (trained)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    parser.add_argument("--no-verify", action="store_true", help="skip the fresh-process check")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from export.index import IndexConfig
    from export.savedmodel import ExportConfig, export_run
    from tfrs_model.config import with_overrides

    index = with_overrides(
        IndexConfig(kind=args.index, k=args.k),
        num_leaves=args.num_leaves,
        num_leaves_to_search=args.num_leaves_to_search,
        num_reordering_candidates=args.num_reordering_candidates,
        dimensions_per_block=args.dimensions_per_block,
        training_iterations=args.training_iterations,
    )
    result = export_run(
        ExportConfig(
            run_dir=args.run,
            model_base_path=args.model_base_path,
            version=args.version,
            index=index,
            weights=args.weights,
            known_through=args.known_through,
            force=args.force,
            verify=not args.no_verify,
            new_items=args.new_items,
            remove_items=args.remove_items,
            catalog_from=args.catalog_from,
        )
    )
    recall = result.verification.get("scann_recall_at_10")
    checked = f", ScaNN recall@10 vs exact {recall:.3f}" if recall is not None else ""
    print(
        f"exported version {result.version} to {result.path} ({result.weights} weights, trained "
        f"on {' + '.join(result.trained_on)}; history known through {result.known_through})"
        f"{checked}"
    )
    if result.catalog["added_item_ids"] or result.catalog["removed_item_ids"]:
        print(catalog_line(result.catalog))  # a version with catalog edits says what they are
    return 0


def catalog_line(catalog: dict) -> str:
    """What the version's catalog holds and what this export changed (the model card's
    `catalog` section)."""
    start = (
        f"version {catalog['base_version']}'s catalog"
        if catalog["base_version"] is not None
        else "the trained catalog"
    )
    return (
        f"catalog: {catalog['items']} items; from {start}: "
        f"{len(catalog['added_in_this_version'])} added, "
        f"{len(catalog['removed_in_this_version'])} removed; relative to the "
        f"{catalog['trained_items']} trained items: {len(catalog['added_item_ids'])} added, "
        f"{len(catalog['removed_item_ids'])} removed"
    )
