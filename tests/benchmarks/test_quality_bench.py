"""The quality benchmark trains each variant and ranks it beside the baselines in one harness."""

import dataclasses

import pytest

from benchmarks import quality
from tfrs_model.config import DataConfig, ModelConfig, TrainConfig
from tfrs_model.data.splits import TEST, assign_splits
from tfrs_model.data.synthetic import make_synthetic
from tfrs_model.errors import ConfigError

pytestmark = pytest.mark.slow

SMALL = ModelConfig(
    embedding_dim=16,
    id_embedding_dim=16,
    feature_embedding_dim=8,
    hidden_layers=(),
    ensemble_members=1,  # the harness, not the ensemble, is under test: one member is faster
)


def test_tutorial_configuration_matches_the_tfrs_tutorial():
    # User and item id embeddings of 32, Adagrad 0.1, batch 8192, 3 epochs, nothing else.
    assert quality.TUTORIAL_MODEL.id_embedding_dim == 32
    assert not (
        quality.TUTORIAL_MODEL.use_history
        or quality.TUTORIAL_MODEL.use_user_features
        or quality.TUTORIAL_MODEL.use_item_features
    )
    train = quality.TUTORIAL_TRAIN
    assert (train.optimizer, train.learning_rate, train.batch_size, train.epochs) == (
        "adagrad",
        0.1,
        8192,
        3,
    )


def test_benchmark_ranks_every_variant_and_baseline(tmp_path):
    data = make_synthetic(num_users=120, num_items=60, interactions_per_user=15, seed=3)
    fast = TrainConfig(epochs=2, batch_size=256, tensorboard=False, early_stopping_patience=0)
    variants = (
        quality.Variant("two_tower", SMALL, fast),
        quality.Variant(
            "tfrs_tutorial",
            dataclasses.replace(quality.TUTORIAL_MODEL, id_embedding_dim=16, embedding_dim=16),
            dataclasses.replace(quality.TUTORIAL_TRAIN, epochs=2),
        ),
    )
    report, timings = quality.run_quality_benchmark(
        data,
        DataConfig(dataset="synthetic"),
        variants,
        export_dir=tmp_path,
        index_kind="brute-force",
    )

    served = quality.exported_name("two_tower", "brute-force")
    assert set(report.results) == {
        "two_tower",
        served,
        "tfrs_tutorial",
        "random",
        "popularity",
        "ease",
        quality.STRICT_EASE,
        "svd",
    }
    # The strict row takes, per metric, the best L2 on test: never below the tuned EASE row.
    for metric, value in report.results["ease"].items():
        assert report.results[quality.STRICT_EASE][metric] >= value - 1e-12, metric
    assert set(report.tuning["ease_strict_l2"]) == set(report.results["ease"])
    assert set(timings) == {"two_tower", "tfrs_tutorial"}
    assert timings["tfrs_tutorial"]["epochs"] == 2
    assert all(0.0 <= r["recall@10"] <= 1.0 for r in report.results.values())
    markdown = quality.quality_markdown(report, timings)
    assert markdown.count("\n| ") == 1 + 8  # header + one row per model
    # The exported model ranks through serving_default exactly as the trained one does.
    assert report.results[served] == pytest.approx(report.results["two_tower"], abs=1e-9)
    target = quality.target_markdown(report, served)
    ratio = report.results[served]["recall@10"] / report.results["ease"]["recall@10"]
    assert f"| ease | 1.00x | {ratio:.3f}x |" in target
    assert target.count("| yes |") + target.count("| no |") == 3
    strict = report.results[quality.STRICT_EASE]
    recall_100 = report.results[served]["recall@100"] / strict["recall@100"]
    assert f"| {quality.STRICT_EASE} | 1.10x |" in target
    assert f"{recall_100:.3f}x | " in target
    chart = quality.quality_chart(report, tmp_path / "quality.png")
    if chart is not None:  # matplotlib is a dev dependency
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = quality.result_payload(report, timings, "synthetic")
    assert payload["results"]["ease"] == report.results["ease"]


def test_ablation_moves_one_lever_per_variant_and_reports_each_seed_mean():
    base = quality.Variant("default", SMALL, TrainConfig(epochs=2, batch_size=256))
    variants = quality.ablation_variants(base)
    assert variants[0] == base
    for variant in variants[1:]:
        changed = [
            f.name
            for config, reference in ((variant.model, base.model), (variant.train, base.train))
            for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(reference, f.name)
        ] + (["history_length"] if variant.history_length != base.history_length else [])
        # One lever each; dropping side features switches off both towers' features together.
        assert len(changed) == 1 or set(changed) == {"use_user_features", "use_item_features"}
    data = make_synthetic(num_users=80, num_items=40, interactions_per_user=15, seed=4)
    chosen = quality.select_variants(variants, ["no refit on train + validation"])
    rows = quality.run_ablation(data, DataConfig(dataset="synthetic"), chosen, (0, 1))
    assert list(rows) == ["default", "no refit on train + validation"]
    assert all(row["seeds"] == 2 and 0.0 <= row["recall@10"] <= 1.0 for row in rows.values())
    markdown = quality.ablation_markdown(rows, "default")
    assert "| default |" in markdown and "+0.0000 |" in markdown


def test_ablation_variants_are_chosen_by_name_and_unknown_names_refused():
    variants = quality.ablation_variants(quality.default_variants()[0])
    chosen = quality.select_variants(variants, ["2 ensemble members", "batch 512"])
    # The default model first, then the named ones in the ablation's order.
    assert [v.name for v in chosen] == ["two_tower", "2 ensemble members", "batch 512"]
    assert chosen[1].model.ensemble_members == 2
    with pytest.raises(ConfigError, match=r"unknown ablation variant\(s\) \['3 members'\]"):
        quality.select_variants(variants, ["3 members"])


@pytest.mark.slow
def test_features_carry_cold_users_and_items_on_planted_clusters(tiny_config):
    # Occupation names a user's preferred cluster and genre an item's cluster, so features alone
    # should beat popularity for unseen users and chance for unseen items.
    data = make_synthetic(num_users=200, num_items=100, interactions_per_user=20, seed=0)
    # Positives only, histories ending at their targets: this checks what the features carry;
    # the quality defaults (non-positives at half weight, histories skipping up to 8 of 10
    # items on 20 interactions per user) only add noise to that here.
    config = tiny_config(epochs=4, history_skip=0)
    model = dataclasses.replace(config.model, non_positive_weight=0.0)
    variant = quality.Variant("two_tower", model, config.train)
    users, items = quality.run_cold_start(data, config.data, variant, fraction=0.2)
    assert (users.kind, items.kind) == ("users", "items")
    split = assign_splits(data, config.data)
    assert users.held_out == round(0.2 * split.positives(TEST)["user_id"].nunique())
    assert users.evaluated_users == users.held_out
    # Features alone more than double popularity for unseen users. Training this tiny log is not
    # bit-reproducible: 40 held-out users gave recall@10 0.29-0.36 against popularity's 0.12
    # over runs here and in CI, so a fixed margin of +0.2 (0.319) failed one fresh-clone run.
    assert users.results["two_tower"]["recall@10"] > 2 * users.results["popularity"]["recall@10"]
    assert items.candidates == items.held_out
    assert items.results["two_tower"]["ndcg@10"] > items.results["random"]["ndcg@10"] + 0.1
    markdown = quality.cold_start_markdown([users, items])
    assert markdown.count("| users |") == 2 and markdown.count("| items |") == 3
