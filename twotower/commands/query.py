"""`twotower query`: ask a running model server for top items and print them as a table or JSON.

`run_query` reads the model's metadata, then ranks items for each id through one signature with
`serving.client.TwoTowerClient`. Also home of the server flags (`add_server_arguments`,
`client_config`) that `twotower bench serve` shares. TensorFlow is imported only when a command
runs (the client imports it), so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export import contract
from tfrs_model.errors import ConfigError

if TYPE_CHECKING:
    from serving.client import ClientConfig, QueryResult


@dataclass(frozen=True)
class QueryRequest:
    """What `twotower query` asks for.

    Attributes:
      ids: user ids, or item ids for `similar_items`; sent in one request.
      signature: a signature returning ITEM_IDS and SCORES (serving_default, recommend,
        similar_items).
      k: keep the best k per list; None keeps all. With `allow` or `filters`, the server
        returns k per user (None: the exported maximum).
      titles: fetch titles when the model has the `item_titles` signature.
      allow: only these item ids; empty: every item.
      filters: "feature=value" pairs (OR within a feature, AND across features); with `allow`,
        they turn serving_default into recommend_filtered and recommend into
        recommend_filtered_context.
    """

    ids: tuple[str, ...]
    signature: str = contract.SERVING_DEFAULT
    k: int | None = None
    titles: bool = True
    allow: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.allow or self.filters)


def run_query(config: ClientConfig, request: QueryRequest) -> QueryResult:
    """Reads the model's metadata, then ranks items for each id through `request.signature`.

    Raises:
      ConfigError: the model has no such signature, or it does not return ranked lists.
      ServingError, ResponseError: as for `TwoTowerClient.predict`.
    """
    from serving.client import QueryResult, TwoTowerClient, signature_of  # imports TensorFlow

    with TwoTowerClient(config) as client:
        metadata = client.metadata()
        signature = signature_of(metadata, request.signature)
        if not {contract.ITEM_IDS, contract.SCORES} <= signature.outputs.keys():
            raise ConfigError(
                f"signature {request.signature!r} returns {sorted(signature.outputs)}, not ranked "
                f"lists; query {contract.SERVING_DEFAULT}, {contract.RECOMMEND} or "
                f"{contract.SIMILAR_ITEMS}"
            )
        with_titles = request.titles and metadata.has_signature(contract.ITEM_TITLES)
        ids, k = list(request.ids), request.k
        narrow = (
            {"allow": list(request.allow), "filters": list(request.filters)}
            if request.filtered
            else {}
        )
        if request.signature == contract.SIMILAR_ITEMS:
            lists = client.similar_items(ids, k, with_titles=with_titles)
            answered = request.signature
        elif request.signature == contract.RECOMMEND:
            lists = client.recommend_with_context(ids, k=k, with_titles=with_titles, **narrow)
            answered = contract.RECOMMEND_FILTERED_CONTEXT if narrow else request.signature
        else:
            lists = client.recommend(ids, k, request.signature, with_titles=with_titles, **narrow)
            answered = contract.RECOMMEND_FILTERED if narrow else request.signature
    return QueryResult(
        model_name=metadata.model_name or config.model_name,
        version=metadata.version,
        signature=answered,
        query_ids=tuple(request.ids),
        recommendations=tuple(tuple(ranked) for ranked in lists),
        titles_fetched=with_titles,
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags naming the gRPC endpoint, the model (version or label), the deadline and TLS."""
    group = parser.add_argument_group("server")
    group.add_argument(
        "--target",
        default=f"localhost:{contract.GRPC_PORT}",
        help="host:port of the gRPC endpoint (default: %(default)s)",
    )
    group.add_argument(
        "--model-name",
        default=contract.DEFAULT_MODEL_NAME,
        help="served model name (default: %(default)s)",
    )
    version = group.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="model version (default: latest)")
    version.add_argument("--version-label", help="model version label, e.g. stable")
    group.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="deadline of each call in seconds (default: %(default)s)",
    )
    tls = parser.add_argument_group("TLS (any of these flags turns TLS on)")
    tls.add_argument("--tls", action="store_true", help="TLS with gRPC's default root CAs")
    tls.add_argument("--root-certs", type=Path, help="PEM file of the CAs to trust")
    tls.add_argument("--client-cert", type=Path, help="PEM client certificate (mutual TLS)")
    tls.add_argument("--client-key", type=Path, help="PEM key of --client-cert")
    tls.add_argument("--server-name", help="name to check the server certificate against")


def client_config(args: argparse.Namespace) -> ClientConfig:
    """The ClientConfig the `add_server_arguments` flags describe.

    Raises:
      ConfigError: inconsistent flags (e.g. --client-cert without --client-key).
    """
    from serving.client import ClientConfig, TlsConfig  # imports TensorFlow

    tls_flags = (args.root_certs, args.client_cert, args.client_key, args.server_name)
    tls = None
    if args.tls or any(flag is not None for flag in tls_flags):
        tls = TlsConfig(*tls_flags)
    return ClientConfig(
        target=args.target,
        model_name=args.model_name,
        version=args.version,
        version_label=args.version_label,
        timeout_s=args.timeout,
        tls=tls,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="print the top items a running model server returns",
        description="Ask a TF-Serving-compatible server for each user's top items (or each "
        "item's nearest items with --signature similar_items) and print rank, item id, score "
        "and title (titles come from the item_titles signature when the model has it).",
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--user-id", action="append", default=[], help="user to recommend for; repeat for more"
    )
    parser.add_argument(
        "--item-id", action="append", default=[], help="item to find neighbours of (similar_items)"
    )
    parser.add_argument("--k", type=int, help="show the best k per list (default: all returned)")
    parser.add_argument(
        "--signature",
        default=contract.SERVING_DEFAULT,
        help=f"{contract.SERVING_DEFAULT} (default), {contract.RECOMMEND} or "
        f"{contract.SIMILAR_ITEMS}",
    )
    parser.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FEATURE=V1[,V2...]",
        help="only items with one of these values of an item feature, e.g. --filter lang=hi,en "
        "--filter country=IN (values OR'ed, features AND'ed); asks recommend_filtered "
        "(recommend_filtered_context with --signature recommend) for exactly --k items",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="ITEM_ID",
        help="only these items; repeat for more (combines with --filter)",
    )
    parser.add_argument("--no-titles", action="store_true", help="do not fetch titles")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(handler=run)


def query_request(args: argparse.Namespace) -> QueryRequest:
    """The QueryRequest of the flags: item ids for similar_items, user ids otherwise.

    Raises:
      ConfigError: the ids do not fit the signature.
    """
    if args.signature == contract.SIMILAR_ITEMS:
        ids, flag, other = args.item_id, "--item-id", args.user_id
    else:
        ids, flag, other = args.user_id, "--user-id", args.item_id
    if not ids or other:
        raise ConfigError(
            f"--signature {args.signature} takes {flag} (at least one), and only that: "
            f"--item-id goes with {contract.SIMILAR_ITEMS}, --user-id with the others"
        )
    if (args.filter or args.allow) and args.signature not in (
        contract.SERVING_DEFAULT,
        contract.RECOMMEND,
    ):
        raise ConfigError(
            f"--filter and --allow go with --signature {contract.SERVING_DEFAULT} or "
            f"{contract.RECOMMEND}, not {args.signature}"
        )
    return QueryRequest(
        ids=tuple(ids),
        signature=args.signature,
        k=args.k,
        titles=not args.no_titles,
        allow=tuple(args.allow),
        filters=tuple(pair for flag in args.filter for pair in filter_flag_pairs(flag)),
    )


def filter_flag_pairs(flag: str) -> list[str]:
    """`lang=hi,en` -> ["lang=hi", "lang=en"] (a value cannot hold a comma here).

    Raises:
      ConfigError: not FEATURE=VALUE[,VALUE...] with a feature and every value non-empty.
    """
    feature, sep, values = flag.partition(contract.FILTER_SEPARATOR)
    listed = values.split(",")
    if not sep or not feature or not all(listed):
        raise ConfigError(
            f"--filter {flag!r} must be FEATURE=VALUE[,VALUE...] with no empty part, "
            "e.g. --filter lang=hi,en"
        )
    return [f"{feature}{contract.FILTER_SEPARATOR}{value}" for value in listed]


def run(args: argparse.Namespace) -> int:
    result = run_query(client_config(args), query_request(args))
    print(format_json(result) if args.json else format_table(result))
    return 0


def _query_kind(result: QueryResult) -> str:
    return "item" if result.signature == contract.SIMILAR_ITEMS else "user"


def _columns(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Aligns cells into lines: columns in `right` right-aligned, the others left-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def format_table(result: QueryResult) -> str:
    """One table per queried id: rank, item id, score (4 decimals) and, if fetched, title."""
    lines = [f"model {result.model_name}, version {result.version}, signature {result.signature}"]
    headers = ["rank", "item_id", "score"] + (["title"] if result.titles_fetched else [])
    for query_id, ranked in zip(result.query_ids, result.recommendations, strict=True):
        lines += ["", f"{_query_kind(result)} {query_id}"]
        if not ranked:
            lines.append("(no results)")
            continue
        rows = [
            [str(rank), r.item_id, f"{r.score:.4f}"]
            + ([r.title or ""] if result.titles_fetched else [])
            for rank, r in enumerate(ranked, start=1)
        ]
        lines += _columns(headers, rows, right={0, 2})
    return "\n".join(lines)


def result_dict(result: QueryResult) -> dict[str, Any]:
    """The JSON form: model, version, signature and one entry per queried id (scores rounded to
    6 decimals; title is null when titles were not fetched)."""
    key = f"{_query_kind(result)}_id"
    return {
        "model_name": result.model_name,
        "version": result.version,
        "signature": result.signature,
        "results": [
            {
                key: query_id,
                "recommendations": [
                    {
                        "rank": rank,
                        "item_id": r.item_id,
                        "score": round(r.score, 6),
                        "title": r.title,
                    }
                    for rank, r in enumerate(ranked, start=1)
                ],
            }
            for query_id, ranked in zip(result.query_ids, result.recommendations, strict=True)
        ],
    }


def format_json(result: QueryResult) -> str:
    return json.dumps(result_dict(result), indent=2, ensure_ascii=False)
