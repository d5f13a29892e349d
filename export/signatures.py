"""The exported `tf.Module`: towers, retrieval index and baked lookup tables, with one
`tf.function` per serving signature (names and keys from `export.contract`).

Everything a signature needs lives in the graph as constants, tables or variables, so the
SavedModel runs in TF Serving with core TensorFlow ops (plus `Scann>` ops for a ScaNN index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from export import contract
from export.constraints import ItemConstraints
from export.filtered import FilteredSearchConfig, filtered_top_k
from export.index import retrieve
from export.item_filters import FilterIndex, ItemFeatureCodes, check_any
from tfrs_model.features.spec import HISTORY, USER_ID, FeatureSet, FeatureSpec

NO_ITEM = -1  # identifier used for padding and for items outside the catalog


@dataclass(frozen=True)
class BakedUsers:
    """Per-user context known at export time, columnar: no Python object per user or item.

    Attributes:
      user_ids: `[U]` str.
      features: `{name: [U] or [U, L] str}` for every query feature except `user_id` and
        `history`.
      history: `[U, H]` int32 rows of `history_items`, left-padded with -1, most recent last;
        None when the query tower takes no history.
      history_items: `[V]` str: the item ids `history` indexes (the catalog, then any known
        item outside it).
      excluded: `[U, I]` bool CSR of catalog rows to never recommend (known items).
    """

    user_ids: np.ndarray
    features: dict[str, np.ndarray]
    history: np.ndarray | None
    history_items: np.ndarray
    excluded: sp.csr_matrix


def _string_table(keys: np.ndarray, default: int) -> tf.lookup.StaticHashTable:
    """Maps `keys` ([n] str) to their positions 0..n-1; other strings to `default`."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys.astype(str)), tf.range(len(keys), dtype=tf.int32)
        ),
        default_value=default,
    )


def _frozen(values: np.ndarray, dtype: tf.DType) -> tf.Variable:
    """A non-trainable variable: saved in the variables shards, not in the graph proto, which
    TensorFlow caps at 2 GB."""
    return tf.Variable(tf.constant(values, dtype=dtype), trainable=False)


def _with_unknown_row(values: np.ndarray) -> tf.Variable:
    """Appends an all-padding row, gathered for ids the table does not know."""
    pad = np.full((1, *values.shape[1:]), contract.PAD, dtype=object)
    return _frozen(np.concatenate([values, pad]).astype(str), tf.string)


def input_spec(spec: FeatureSpec) -> tf.TensorSpec:
    """Scalar features are `[batch]` strings, multi-valued ones `[batch, L]` with any L."""
    shape = [None, None] if spec.multivalued else [None]
    return tf.TensorSpec(shape, tf.string, name=spec.name)


def compact_history(history: tf.Tensor, length: int) -> tf.Tensor:
    """The last `length` non-padding items of each row, left-padded with "".

    Args:
      history: `[batch, L]` item ids, most recent last; "" padding may stand anywhere.

    Returns:
      `[batch, length]`, the layout the towers were trained on.
    """
    valid = tf.not_equal(history, contract.PAD)
    count = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1, keepdims=True)
    order = tf.cumsum(tf.cast(valid, tf.int32), axis=1)  # 1..count at valid positions
    column = length - (count - order) - 1  # the most recent item goes to column length-1
    keep = valid & (column >= 0)
    rows = tf.cast(tf.where(keep)[:, 0], tf.int32)
    indices = tf.stack([rows, tf.boolean_mask(column, keep)], axis=1)
    out = tf.fill([tf.shape(history)[0], length], contract.PAD)
    return tf.tensor_scatter_nd_update(out, indices, tf.boolean_mask(history, keep))


class ServingModule(tf.Module):
    """The exported model. See `docs/serving.md` for each signature's contract."""

    def __init__(
        self,
        query_model: tf.keras.Model,
        candidate_model: tf.keras.Model,
        index: tf.keras.layers.Layer,
        features: FeatureSet,
        catalog_ids: np.ndarray,
        catalog_titles: np.ndarray,
        candidate_embeddings: np.ndarray,
        users: BakedUsers,
        k: int,
        item_features: ItemFeatureCodes | None = None,
        filtered_search: FilteredSearchConfig | None = None,
        withdrawn_ids: np.ndarray | None = None,
    ) -> None:
        super().__init__(name="twotower")
        self.query_model = query_model
        self.candidate_model = candidate_model
        self.index = index
        self.k = int(k)
        self.item_filters = FilterIndex(item_features or ItemFeatureCodes({}, {}))
        self.filtered_search = filtered_search or FilteredSearchConfig()
        self._query_specs = {s.name: s for s in features.query}
        self._history_length = (
            self._query_specs[HISTORY].max_values if HISTORY in self._query_specs else 0
        )
        self.catalog_ids = _frozen(catalog_ids.astype(str), tf.string)
        self.catalog_titles = _frozen(
            np.append(catalog_titles, contract.PAD).astype(str), tf.string
        )
        self.candidate_embeddings = _frozen(candidate_embeddings, tf.float32)
        self.item_rows = _string_table(catalog_ids, default=NO_ITEM)
        # Trained items removed from the catalog: their ids are still in the tower's vocabulary,
        # so lookups of them go through an out-of-vocabulary id and answer as unknown items do.
        # "" keeps the table non-empty and maps to itself.
        withdrawn = np.array([contract.PAD, *(withdrawn_ids if withdrawn_ids is not None else [])])
        self.withdrawn_rows = _string_table(withdrawn.astype(object), default=NO_ITEM)
        unknown_user = len(users.user_ids)
        self.user_rows = _string_table(users.user_ids, default=unknown_user)
        self.user_features = {
            name: _with_unknown_row(values) for name, values in users.features.items()
        }
        self._baked_history = users.history is not None
        if self._baked_history:
            # Ragged int32 rows into the item ids, most recent first, without the padding: 4 bytes
            # per history item rather than a [U, H] string matrix. Row U (unknown users) is
            # empty; padding gathers the "" appended to the ids.
            recent_first = users.history[:, ::-1]
            valid = recent_first >= 0
            splits = np.concatenate([[0], np.cumsum(valid.sum(axis=1)), [valid.sum()]])
            self.history_values = _frozen(recent_first[valid], tf.int32)
            self.history_splits = _frozen(splits.astype(np.int64), tf.int64)
            self.history_items = _frozen(
                np.append(users.history_items, contract.PAD).astype(str), tf.string
            )
        # The exclusions' CSR as a ragged tensor's row splits, plus an empty row for unknown users.
        excluded = users.excluded
        self.excluded_values = _frozen(excluded.indices.astype(np.int32), tf.int32)
        self.excluded_splits = _frozen(
            np.append(excluded.indptr, excluded.indptr[-1]).astype(np.int64), tf.int64
        )

    # -- building blocks -------------------------------------------------------------------

    def _baked_context(self, user_id: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """Query features and excluded catalog rows (`[batch, E]`, -1 padded) of known users."""
        rows = self.user_rows.lookup(user_id)
        features = {USER_ID: user_id}
        for name, table in self.user_features.items():
            features[name] = tf.gather(table, rows)
        if self._baked_history:
            features[HISTORY] = self._baked_history_of(rows)
        excluded = tf.RaggedTensor.from_row_splits(
            self.excluded_values.read_value(), self.excluded_splits.read_value(), validate=False
        )
        return features, tf.gather(excluded, rows).to_tensor(default_value=NO_ITEM)

    def _baked_history_of(self, rows: tf.Tensor) -> tf.Tensor:
        """`[batch, H]` item ids of baked users' `rows`, left-padded with "", most recent last."""
        recent_first = tf.RaggedTensor.from_row_splits(
            self.history_values.read_value(), self.history_splits.read_value(), validate=False
        )
        pad = tf.shape(self.history_items, out_type=tf.int32)[0] - 1
        padded = tf.gather(recent_first, rows).to_tensor(
            default_value=pad, shape=[None, self._history_length]
        )
        return tf.gather(self.history_items, tf.reverse(padded, axis=[1]))

    def _request_context(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = {name: inputs[name] for name in self._query_specs}
        if self._history_length:
            features[HISTORY] = compact_history(inputs[HISTORY], self._history_length)
        return features

    def _top_k(self, queries: tf.Tensor, excluded_rows: tf.Tensor) -> dict[str, tf.Tensor]:
        scores, rows = retrieve(self.index, queries, self.k, excluded_rows)
        item_ids = tf.gather(self.catalog_ids, tf.maximum(rows, 0))
        item_ids = tf.where(rows >= 0, item_ids, contract.PAD)
        return {contract.ITEM_IDS: item_ids, contract.SCORES: scores}

    def _filtered_top_k(
        self, queries: tf.Tensor, excluded_rows: tf.Tensor, inputs: dict[str, tf.Tensor]
    ) -> dict[str, tf.Tensor]:
        """Top `inputs[K]` items per row among those passing `ALLOW` and `FILTERS`.

        Args:
          queries: `[B, d]`; excluded_rows: `[B, E]` catalog rows never returned (-1 padding);
          inputs: holds K `[B]` int32, ALLOW `[B, A]` and FILTERS `[B, F]` strings.

        Returns:
          ITEM_IDS `[B, k]` and SCORES `[B, k]` (k = the exported maximum), "" and -inf past
          each row's k or its passing items.
        """
        k = inputs[contract.K]
        feature_ids, value_codes, checks = self.item_filters.parse(inputs[contract.FILTERS])
        checks.append(
            check_any(
                (k < 1) | (k > self.k),
                k,
                f"k must be between 1 and the exported maximum of {self.k} in every row; got ",
                "",
            )
        )
        allow = inputs[contract.ALLOW]
        constraints = ItemConstraints(
            filters=self.item_filters,
            num_items=tf.shape(self.catalog_ids, out_type=tf.int32)[0],
            allow_rows=self._item_rows_of(allow),
            allow_listed=tf.reduce_any(tf.not_equal(allow, contract.PAD), axis=1),
            excluded_rows=excluded_rows,
            feature_ids=feature_ids,
            value_codes=value_codes,
        )
        with tf.control_dependencies(checks):
            scores, rows = filtered_top_k(
                self.index,
                self.candidate_embeddings.read_value(),
                queries,
                k,
                self.k,
                constraints,
                self.filtered_search,
            )
        item_ids = tf.where(rows >= 0, tf.gather(self.catalog_ids, tf.maximum(rows, 0)), "")
        return {contract.ITEM_IDS: item_ids, contract.SCORES: scores}

    def _item_rows_of(self, item_ids: tf.Tensor) -> tf.Tensor:
        return self.item_rows.lookup(item_ids)

    def _candidate_embedding(self, item_id: tf.Tensor) -> tf.Tensor:
        """Stored embeddings for catalog items; the candidate tower (id only) for others, with an
        out-of-vocabulary id ("") for removed trained items."""
        rows = self._item_rows_of(item_id)
        stored = tf.gather(self.candidate_embeddings, tf.maximum(rows, 0))
        withdrawn = self.withdrawn_rows.lookup(item_id) >= 0
        tower_ids = tf.where(withdrawn, tf.fill(tf.shape(item_id), contract.PAD), item_id)
        computed = self.candidate_model(self._candidate_inputs(tower_ids))
        return tf.where((rows >= 0)[:, None], stored, computed)

    def _candidate_inputs(self, item_id: tf.Tensor) -> dict[str, tf.Tensor]:
        inputs = {}
        for spec in self.candidate_model.specs:
            if spec.name == "item_id":
                inputs[spec.name] = item_id
            elif spec.multivalued:
                inputs[spec.name] = tf.fill([tf.shape(item_id)[0], spec.max_values], contract.PAD)
            else:
                inputs[spec.name] = tf.fill(tf.shape(item_id), contract.PAD)
        return inputs

    # -- signatures ------------------------------------------------------------------------

    def serving_default(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features, excluded = self._baked_context(inputs[contract.USER_ID])
        return self._top_k(self.query_model(features), excluded)

    def recommend(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        queries = self.query_model(self._request_context(inputs))
        return self._top_k(queries, self._item_rows_of(inputs[contract.EXCLUDE]))

    def recommend_filtered(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features, excluded = self._baked_context(inputs[contract.USER_ID])
        return self._filtered_top_k(self.query_model(features), excluded, inputs)

    def recommend_filtered_context(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        queries = self.query_model(self._request_context(inputs))
        return self._filtered_top_k(queries, self._item_rows_of(inputs[contract.EXCLUDE]), inputs)

    def similar_items(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        item_id = inputs[contract.ITEM_ID]
        own_row = self._item_rows_of(item_id)[:, None]
        return self._top_k(self._candidate_embedding(item_id), own_row)

    def query_embedding(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {contract.EMBEDDING: self.query_model(self._request_context(inputs))}

    def candidate_embedding(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {contract.EMBEDDING: self._candidate_embedding(inputs[contract.ITEM_ID])}

    def item_titles(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        rows = self._item_rows_of(inputs[contract.ITEM_IDS])
        unknown = tf.shape(self.catalog_titles, out_type=tf.int32)[0] - 1
        return {contract.TITLES: tf.gather(self.catalog_titles, tf.where(rows >= 0, rows, unknown))}

    # -- wiring ----------------------------------------------------------------------------

    def context_specs(self) -> dict[str, tf.TensorSpec]:
        """Request-time query inputs: user_id, history and each user feature."""
        specs = {}
        for name, spec in self._query_specs.items():
            specs[name] = (
                tf.TensorSpec([None, None], tf.string, name=HISTORY)
                if name == HISTORY
                else input_spec(spec)
            )
        return specs

    def signatures(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """Concrete functions keyed by signature name, ready for `tf.saved_model.save`."""
        string = tf.string
        user = {contract.USER_ID: tf.TensorSpec([None], string, name=contract.USER_ID)}
        item = {contract.ITEM_ID: tf.TensorSpec([None], string, name=contract.ITEM_ID)}
        exclude = {contract.EXCLUDE: tf.TensorSpec([None, None], string, name=contract.EXCLUDE)}
        items_2d = {contract.ITEM_IDS: tf.TensorSpec([None, None], string, name=contract.ITEM_IDS)}
        context = self.context_specs()
        filtered = {
            contract.K: tf.TensorSpec([None], tf.int32, name=contract.K),
            contract.ALLOW: tf.TensorSpec([None, None], string, name=contract.ALLOW),
            contract.FILTERS: tf.TensorSpec([None, None], string, name=contract.FILTERS),
        }
        plan = {
            contract.SERVING_DEFAULT: (self.serving_default, user),
            contract.RECOMMEND: (self.recommend, {**context, **exclude}),
            contract.SIMILAR_ITEMS: (self.similar_items, item),
            contract.QUERY_EMBEDDING: (self.query_embedding, context),
            contract.CANDIDATE_EMBEDDING: (self.candidate_embedding, item),
            contract.ITEM_TITLES: (self.item_titles, items_2d),
            contract.RECOMMEND_FILTERED: (self.recommend_filtered, {**user, **filtered}),
            contract.RECOMMEND_FILTERED_CONTEXT: (
                self.recommend_filtered_context,
                {**context, **exclude, **filtered},
            ),
        }
        return {
            name: tf.function(method).get_concrete_function(spec)
            for name, (method, spec) in plan.items()
        }
