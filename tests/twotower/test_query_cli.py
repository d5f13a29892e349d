"""Tests of `twotower query`: formatting against golden strings, flags, and a run on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from fixtures.fake_serving import MODEL, VERSION, FakeServing, serve

from export import contract
from serving.client import ClientConfig, QueryResult, Recommendation
from tfrs_model.errors import ConfigError
from twotower.cli import build_parser, main
from twotower.commands.query import (
    QueryRequest,
    client_config,
    format_json,
    format_table,
    query_request,
    run_query,
)

_WITH_TITLES = QueryResult(
    model_name="twotower",
    version=2,
    signature="serving_default",
    query_ids=("196", "7"),
    recommendations=(
        (
            Recommendation("50", 4.12346, "Star Wars (1977)"),
            Recommendation("1000", 3.5, "Lamerica (1995)"),
        ),
        (),
    ),
    titles_fetched=True,
)
_SIMILAR = QueryResult(
    model_name="twotower",
    version=1,
    signature="similar_items",
    query_ids=("50",),
    recommendations=((Recommendation("181", 0.9),),),
)


@pytest.fixture
def fake() -> Iterator[FakeServing]:
    with serve() as running:
        yield running


def test_table_with_titles():
    assert format_table(_WITH_TITLES) == (
        "model twotower, version 2, signature serving_default\n"
        "\n"
        "user 196\n"
        "rank  item_id   score  title\n"
        "   1  50       4.1235  Star Wars (1977)\n"
        "   2  1000     3.5000  Lamerica (1995)\n"
        "\n"
        "user 7\n"
        "(no results)"
    )


def test_table_without_titles_for_similar_items():
    assert format_table(_SIMILAR) == (
        "model twotower, version 1, signature similar_items\n"
        "\n"
        "item 50\n"
        "rank  item_id   score\n"
        "   1  181      0.9000"
    )


def test_json_form():
    assert json.loads(format_json(_WITH_TITLES)) == {
        "model_name": "twotower",
        "version": 2,
        "signature": "serving_default",
        "results": [
            {
                "user_id": "196",
                "recommendations": [
                    {"rank": 1, "item_id": "50", "score": 4.12346, "title": "Star Wars (1977)"},
                    {"rank": 2, "item_id": "1000", "score": 3.5, "title": "Lamerica (1995)"},
                ],
            },
            {"user_id": "7", "recommendations": []},
        ],
    }
    similar = json.loads(format_json(_SIMILAR))["results"]
    assert similar == [
        {
            "item_id": "50",
            "recommendations": [{"rank": 1, "item_id": "181", "score": 0.9, "title": None}],
        }
    ]


def _args(*flags: str):
    return build_parser().parse_args(["query", *flags])


def test_flags_become_a_client_config_and_request():
    args = _args("--target", "h:9", "--user-id", "1", "--user-id", "2", "--k", "5")
    args_tls = _args("--root-certs", "ca.pem", "--version-label", "stable", "--user-id", "1")
    config, request = client_config(args), query_request(args)
    assert (config.target, config.model_name, config.tls, config.timeout_s) == (
        "h:9",
        "twotower",
        None,
        10.0,
    )
    assert (request.ids, request.k, request.signature, request.titles) == (
        ("1", "2"),
        5,
        "serving_default",
        True,
    )
    tls_config = client_config(args_tls)
    assert str(tls_config.tls.root_certificates) == "ca.pem"
    assert tls_config.version_label == "stable"


@pytest.mark.parametrize(
    "flags",
    [
        [],  # no ids
        ["--item-id", "50"],  # item ids need similar_items
        ["--signature", "similar_items", "--user-id", "1"],
        ["--user-id", "1", "--client-cert", "c.pem"],  # a certificate without its key
    ],
)
def test_inconsistent_flags_exit_2_with_a_message(flags, capsys):
    assert main(["query", *flags]) == 2
    assert capsys.readouterr().err.startswith("twotower query: error: ")


def test_version_and_label_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        main(["query", "--user-id", "1", "--version", "1", "--version-label", "stable"])


@pytest.mark.integration
def test_query_prints_a_table_with_titles(fake, capsys):
    assert main(["query", "--target", fake.target, "--user-id", "196", "--k", "2"]) == 0
    assert capsys.readouterr().out == (
        "model twotower, version 2, signature serving_default\n"
        "\n"
        "user 196\n"
        "rank  item_id   score  title\n"
        "   1  196-0    1.0000  Title 196-0\n"
        "   2  196-1    0.7500  Title 196-1\n"
    )


@pytest.mark.integration
def test_query_json_for_similar_items_without_a_titles_signature(fake, capsys):
    fake.with_titles = False
    argv = ["query", "--target", fake.target, "--signature", "similar_items"]
    assert main([*argv, "--item-id", "50", "--item-id", "9", "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == [
        {
            "item_id": "50",
            "recommendations": [{"rank": 1, "item_id": "50-sim0", "score": 1.0, "title": None}],
        },
        {
            "item_id": "9",
            "recommendations": [{"rank": 1, "item_id": "9-sim0", "score": 1.0, "title": None}],
        },
    ]


@pytest.mark.integration
def test_query_reports_server_errors_in_one_line(fake, capsys):
    fake.abort_with = (grpc.StatusCode.NOT_FOUND, "Servable not found")
    assert main(["query", "--target", fake.target, "--user-id", "1", "--model-name", "x"]) == 2
    error = capsys.readouterr().err
    assert "NOT_FOUND: Servable not found" in error
    assert "is the model name right?" in error


@pytest.mark.integration
def test_run_query_fetches_titles_when_the_model_has_the_signature(fake):
    config = ClientConfig(target=fake.target)
    result = run_query(config, QueryRequest(ids=("196",), k=2))
    assert (result.model_name, result.version, result.signature) == (
        MODEL,
        VERSION,
        "serving_default",
    )
    assert result.titles_fetched
    assert result.recommendations == (
        (Recommendation("196-0", 1.0, "Title 196-0"), Recommendation("196-1", 0.75, "Title 196-1")),
    )
    fake.with_titles = False
    plain = run_query(config, QueryRequest(ids=("5",), signature=contract.SIMILAR_ITEMS, k=1))
    assert not plain.titles_fetched
    assert plain.recommendations == ((Recommendation("5-sim0", 1.0),),)


@pytest.mark.integration
@pytest.mark.parametrize("signature", ["nope", contract.QUERY_EMBEDDING])
def test_run_query_rejects_signatures_without_ranked_lists(fake, signature):
    config = ClientConfig(target=fake.target)
    with pytest.raises(ConfigError, match=signature):
        run_query(config, QueryRequest(ids=("1",), signature=signature))
