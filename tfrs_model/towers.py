"""The query and candidate towers: plain Keras models from string features to embeddings."""

from __future__ import annotations

import tensorflow as tf

from tfrs_model.config import ModelConfig
from tfrs_model.features.spec import CANDIDATE, HISTORY, ITEM_ID, QUERY, USER_ID, FeatureSet
from tfrs_model.layers import FeatureEmbedding, HistoryEmbedding

# Any string not in a vocabulary: replaces an id during id dropout to reach the OOV bucket.
_OOV_TOKEN = "[oov]"


class Tower(tf.keras.Model):
    """Embeds each feature, concatenates, applies an MLP and projects to `embedding_dim`.

    Inputs: a dict keyed by feature name of string tensors (`[batch]` or `[batch, L]`), or of
    the int codes the feature embeddings give for them; keys of the other tower are ignored.
    Output: `[batch, embedding_dim]` float32, unit-norm when `l2_normalize` is set.
    """

    def __init__(self, features: FeatureSet, tower: str, config: ModelConfig, **kwargs) -> None:
        super().__init__(name=kwargs.pop("name", f"{tower}_tower"), **kwargs)
        self.specs = features.for_tower(tower)
        self.id_feature = USER_ID if tower == QUERY else ITEM_ID
        self.config = config
        self.embeddings = {
            spec.name: (
                HistoryEmbedding(spec, config.oov_buckets, config.history_pooling)
                if spec.name == HISTORY
                else FeatureEmbedding(spec, config.oov_buckets)
            )
            for spec in self.specs
        }
        self.hidden = [
            tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")
            for i, units in enumerate(config.hidden_layers)
        ]
        self.dropout = tf.keras.layers.Dropout(config.dropout)
        self.projection = tf.keras.layers.Dense(config.embedding_dim, name="projection")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.specs)

    def _drop_ids(self, ids: tf.Tensor) -> tf.Tensor:
        """Replaces each id (string or code) by an OOV one with probability `id_dropout`."""
        keep = tf.random.uniform(tf.shape(ids)) >= self.config.id_dropout
        oov = tf.constant(_OOV_TOKEN)
        if ids.dtype != tf.string:
            oov = tf.cast(self.embeddings[self.id_feature].codes(oov), ids.dtype)
        return tf.where(keep, ids, tf.fill(tf.shape(ids), oov))

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        parts = []
        for spec in self.specs:
            values = inputs[spec.name]
            if training and spec.name == self.id_feature and self.config.id_dropout > 0:
                values = self._drop_ids(values)
            parts.append(self.embeddings[spec.name](values))
        x = tf.concat(parts, axis=1)
        for layer in self.hidden:
            x = self.dropout(layer(x), training=training)
        x = self.projection(x)
        return tf.math.l2_normalize(x, axis=1) if self.config.l2_normalize else x


class EnsembleTower(tf.keras.Model):
    """`members` independently initialised `Tower`s over the same features, read as one.

    Inputs: as `Tower`. Output: `[batch, members * embedding_dim]` float32, the members' outputs
    concatenated and divided by sqrt(members). With unit-norm members the output is unit norm,
    and the dot product of two such outputs is the mean of the members' dot products: a query
    and a candidate ensemble score like the average of their members, through one index.
    `member_outputs` undoes the scaling for the members' own losses.
    """

    def __init__(self, features: FeatureSet, tower: str, config: ModelConfig, **kwargs) -> None:
        super().__init__(name=kwargs.pop("name", f"{tower}_tower"), **kwargs)
        self.members = [
            Tower(features, tower, config, name=f"member_{i}")
            for i in range(config.ensemble_members)
        ]
        self.scale = _ensemble_scale(config.ensemble_members)

    @property
    def specs(self):
        return self.members[0].specs

    @property
    def embeddings(self) -> dict:
        """The first member's feature embeddings. Every member has the same vocabularies, so
        their `codes` (string to row) agree; each member has its own tables."""
        return self.members[0].embeddings

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.members[0].feature_names

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        outputs = [member(inputs, training=training) for member in self.members]
        return tf.concat(outputs, axis=1) / self.scale


def member_outputs(embeddings: tf.Tensor, members: int) -> list[tf.Tensor]:
    """The `members` tower outputs in an `EnsembleTower` output: `[n, members * d]` to
    `members` of `[n, d]`, each as its member computed it."""
    if members == 1:
        return [embeddings]
    return tf.split(embeddings * _ensemble_scale(members), members, axis=1)


def _ensemble_scale(members: int) -> float:
    """sqrt(members): what an `EnsembleTower` divides its concatenated outputs by, so that unit
    members give a unit output (and `member_outputs` multiplies by to undo it)."""
    return float(members) ** 0.5


def _tower(features: FeatureSet, tower: str, config: ModelConfig) -> Tower | EnsembleTower:
    # One member stays a plain Tower: the same variables (and checkpoints) as before ensembles.
    if config.ensemble_members == 1:
        return Tower(features, tower, config)
    return EnsembleTower(features, tower, config)


def query_tower(features: FeatureSet, config: ModelConfig) -> Tower | EnsembleTower:
    """The user side: user id, user features, history."""
    return _tower(features, QUERY, config)


def candidate_tower(features: FeatureSet, config: ModelConfig) -> Tower | EnsembleTower:
    """The item side: item id and item features."""
    return _tower(features, CANDIDATE, config)
