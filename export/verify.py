"""Checks an exported version the way a server will use it, in a fresh process.

`python -m export.verify models/twotower/1 [--json]`:
1. the op list holds only core TensorFlow ops and `Scann>` ops (no PyFunc), so TF Serving
   linked with ScaNN (or stock TF Serving, for brute force) can run it;
2. it loads (with `import scann`), and every contract signature is present with its dtypes;
3. the warm-up requests replay through every signature with outputs of the right shapes;
4. catalog edits (`catalog_edits.json`): added items are in the catalog, removed ones are not
   and embed as unknown ids do;
5. for a ScaNN index, `similar_items` agrees with exact search over the candidate embeddings
   (recall@10 on a sample of items).
Exit status 0 and a JSON report on the last stdout line when every check passes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from export import contract
from export.catalog_edits import EDITS_FILE
from export.loading import load_saved_model
from export.warmup import read_warmup_file

PY_FUNC_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
MIN_SCANN_RECALL = 0.9

# dtype of every contract output, per signature.
_EXPECTED_OUTPUTS = {
    contract.SERVING_DEFAULT: {contract.ITEM_IDS: "string", contract.SCORES: "float32"},
    contract.RECOMMEND: {contract.ITEM_IDS: "string", contract.SCORES: "float32"},
    contract.SIMILAR_ITEMS: {contract.ITEM_IDS: "string", contract.SCORES: "float32"},
    contract.QUERY_EMBEDDING: {contract.EMBEDDING: "float32"},
    contract.CANDIDATE_EMBEDDING: {contract.EMBEDDING: "float32"},
    contract.ITEM_TITLES: {contract.TITLES: "string"},
    **{
        name: {contract.ITEM_IDS: "string", contract.SCORES: "float32"}
        for name in contract.FILTERED_SIGNATURES
    },
}


class VerificationError(Exception):
    pass


def graph_ops(version_dir: Path) -> set[str]:
    """Every op type in the SavedModel's graph and function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def check_ops(ops: set[str]) -> dict[str, Any]:
    """Splits ops into core and ScaNN ones; fails on PyFunc and on unknown custom ops."""
    from tensorflow.python.framework import op_def_registry

    scann_ops = sorted(op for op in ops if op.startswith("Scann"))
    py_funcs = sorted(ops & PY_FUNC_OPS)
    unknown = sorted(
        op for op in ops if not op.startswith("Scann") and op_def_registry.get(op) is None
    )
    if py_funcs:
        raise VerificationError(
            f"graph calls back into Python ({py_funcs}); TF Serving cannot run it"
        )
    if unknown:
        raise VerificationError(
            f"graph uses ops that are neither core TensorFlow nor ScaNN: {unknown}"
        )
    return {"ops": len(ops), "scann_ops": scann_ops}


def check_signatures(model) -> dict[str, Any]:
    missing = [name for name in contract.ALL_SIGNATURES if name not in model.signatures]
    if missing:
        raise VerificationError(f"signatures {missing} are missing")
    for name, outputs in _EXPECTED_OUTPUTS.items():
        actual = {k: v.dtype.name for k, v in model.signatures[name].structured_outputs.items()}
        if actual != outputs:
            raise VerificationError(f"signature {name} outputs {actual}, expected {outputs}")
    return {"signatures": sorted(model.signatures.keys())}


def replay_warmup(model, version_dir: Path) -> dict[str, Any]:
    import tensorflow as tf

    requests = read_warmup_file(version_dir / contract.ASSETS_EXTRA / contract.WARMUP_FILE)
    seen = set()
    for request in requests:
        outputs = model.signatures[request.signature_name](
            **{k: tf.constant(v) for k, v in request.inputs.items()}
        )
        batch = len(next(iter(request.inputs.values())))
        for key, value in outputs.items():
            if value.shape[0] != batch:
                raise VerificationError(
                    f"{request.signature_name}.{key} has batch {value.shape[0]}, expected {batch}"
                )
        seen.add(request.signature_name)
    if seen != set(contract.ALL_SIGNATURES):
        raise VerificationError(f"warm-up covers {sorted(seen)}, not every signature")
    return {"warmup_requests": len(requests)}


def scann_recall(model, catalog: list[str], sample: int = 200, k: int = 10, seed: int = 0) -> float:
    """Recall@k of `similar_items` against exact dot-product search (the item itself excluded)."""
    import tensorflow as tf

    ids = np.array(catalog, dtype=object)
    embeddings = np.concatenate(
        [
            model.signatures[contract.CANDIDATE_EMBEDDING](item_id=tf.constant(chunk.astype(str)))[
                contract.EMBEDDING
            ].numpy()
            for chunk in np.array_split(ids, max(1, len(ids) // 4096))
        ]
    )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ids), size=min(sample, len(ids)), replace=False)
    answer = model.signatures[contract.SIMILAR_ITEMS](item_id=tf.constant(ids[chosen].astype(str)))
    approximate = answer[contract.ITEM_IDS].numpy()[:, :k].astype(str)
    scores = embeddings[chosen] @ embeddings.T
    scores[np.arange(len(chosen)), chosen] = -np.inf
    exact = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = [len(set(approximate[i]) & set(ids[exact[i]].astype(str))) for i in range(len(chosen))]
    return float(np.sum(hits) / (len(chosen) * k))


def check_catalog_edits(model, extra: Path, catalog: list[str]) -> dict[str, Any]:
    """Added items are in the catalog; removed ones are not, and embed as an unknown id does."""
    import tensorflow as tf

    path = extra / EDITS_FILE
    if not path.is_file():
        return {}
    edits = json.loads(path.read_text())
    added = [row["item_id"] for row in edits["added"]]
    removed = edits["removed"]
    known = set(catalog)
    if not known.issuperset(added) or known.intersection(removed):
        raise VerificationError(
            "catalog.json disagrees with catalog_edits.json: an added item is missing or a "
            "removed one is listed"
        )
    if removed:
        embed = model.signatures[contract.CANDIDATE_EMBEDDING]
        sample = tf.constant([*removed[:50], contract.PAD])  # "" is never a catalog id
        vectors = embed(item_id=sample)[contract.EMBEDDING].numpy()
        if not np.allclose(vectors[:-1], vectors[-1:]):
            raise VerificationError("a removed item still embeds as the trained item it was")
    return {"items_added": len(added), "items_removed": len(removed)}


def verify(version_dir: Path) -> dict[str, Any]:
    """Runs every check; returns the report.

    Raises:
      VerificationError: a check failed.
    """
    report: dict[str, Any] = {"path": str(version_dir)}
    report.update(check_ops(graph_ops(version_dir)))
    model = load_saved_model(version_dir)
    report.update(check_signatures(model))
    report.update(replay_warmup(model, version_dir))
    extra = version_dir / contract.ASSETS_EXTRA
    card = json.loads((extra / contract.MODEL_CARD_FILE).read_text())
    catalog = [row["item_id"] for row in json.loads((extra / contract.CATALOG_FILE).read_text())]
    report.update(check_catalog_edits(model, extra, catalog))
    if card["index"]["kind"] == "scann":
        recall = scann_recall(model, catalog)
        report["scann_recall_at_10"] = recall
        if recall < MIN_SCANN_RECALL:
            raise VerificationError(
                f"ScaNN recall@10 against exact search is {recall:.3f} < {MIN_SCANN_RECALL}; "
                "search more leaves (--num-leaves-to-search) or add reordering"
            )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.verify", description=__doc__)
    parser.add_argument("version_dir")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)
    try:
        report = verify(Path(args.version_dir))
    except VerificationError as error:
        print(f"verification failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
