"""The serving contract: signature names and tensor keys of every exported SavedModel.

Clients (`serving/`), the exporter (`export/`) and the tests import these names from here, so the
contract is written down once. The module is pure Python: importing it does not import TensorFlow.
"""

from __future__ import annotations

# Signature names. `serving_default` is TF Serving's default when a request leaves the name empty.
SERVING_DEFAULT = "serving_default"
RECOMMEND = "recommend"
SIMILAR_ITEMS = "similar_items"
QUERY_EMBEDDING = "query_embedding"
CANDIDATE_EMBEDDING = "candidate_embedding"
ITEM_TITLES = "item_titles"  # item_ids [batch, n] -> titles [batch, n], for readable results.
# serving_default's inputs plus K, ALLOW and FILTERS: request-time filters and per-row k.
RECOMMEND_FILTERED = "recommend_filtered"
# recommend's inputs (request-time context and EXCLUDE) plus K, ALLOW and FILTERS.
RECOMMEND_FILTERED_CONTEXT = "recommend_filtered_context"
FILTERED_SIGNATURES = (RECOMMEND_FILTERED, RECOMMEND_FILTERED_CONTEXT)
ALL_SIGNATURES = (
    SERVING_DEFAULT,
    RECOMMEND,
    SIMILAR_ITEMS,
    QUERY_EMBEDDING,
    CANDIDATE_EMBEDDING,
    ITEM_TITLES,
    *FILTERED_SIGNATURES,
)
# TF Serving's init op shows up among the SignatureDefs of every SavedModel; it is not callable.
INIT_OP_SIGNATURE = "__saved_model_init_op"

# Input keys.
USER_ID = "user_id"  # DT_STRING [batch]
ITEM_ID = "item_id"  # DT_STRING [batch]
HISTORY = "history"  # DT_STRING [batch, H], most recent last, padded with "".
EXCLUDE = "exclude"  # DT_STRING [batch, E], padded with "".
# Inputs of the filtered signatures. An item passes a row's FILTERS when, for every feature the
# row names, it has one of the listed values (OR within a feature, AND across features; a
# multi-valued feature passes when any of the item's values is listed). An unknown value matches
# nothing; an unknown feature, or a pair that is not "feature=value", is INVALID_ARGUMENT.
K = "k"  # DT_INT32 [batch]: results wanted in this row, 1..the exported maximum k.
ALLOW = "allow"  # DT_STRING [batch, A]: only these item ids; a row of all "" allows every item.
FILTERS = "filters"  # DT_STRING [batch, F]: "feature=value" pairs; "" entries are ignored.
FILTER_SEPARATOR = "="

# Output keys.
ITEM_IDS = "item_ids"  # DT_STRING [batch, k]
SCORES = "scores"  # DT_FLOAT [batch, k]
EMBEDDING = "embedding"  # DT_FLOAT [batch, ensemble_members * embedding_dim]
TITLES = "titles"  # DT_STRING, same shape as the item_ids given to ITEM_TITLES.

# Padding value for variable-length string inputs (history, exclude, multi-valued features).
PAD = ""

# Files that travel inside a version directory, beside saved_model.pb.
ASSETS_EXTRA = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"  # TF Serving's warm-up file name, in assets.extra/.
MODEL_CARD_FILE = "model_card.json"  # in assets.extra/
CATALOG_FILE = "catalog.json"  # in assets.extra/: [{"item_id": ..., "title": ...}, ...]

DEFAULT_MODEL_NAME = "twotower"
GRPC_PORT = 8500
REST_PORT = 8501
