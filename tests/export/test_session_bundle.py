"""The session bundle (`export.session_bundle`): TF Serving's loader path, which the embedded
server runs. Its answers must be those of the restored TF2 functions, and a version loaded and
dropped many times must give its memory back (the reason the server moved to it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from export.contract import ASSETS_EXTRA, INIT_OP_SIGNATURE, WARMUP_FILE
from export.index import BRUTE_FORCE, SCANN
from export.loading import load_session_bundle
from export.specs import signature_specs
from export.warmup import read_warmup_file

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", [BRUTE_FORCE, SCANN])
def test_every_warmup_request_answers_as_the_restored_functions(version_dirs, loaded, kind):
    bundle = load_session_bundle(version_dirs[kind])
    functions = loaded[kind].signatures
    requests = read_warmup_file(version_dirs[kind] / ASSETS_EXTRA / WARMUP_FILE)

    assert INIT_OP_SIGNATURE in bundle.signature_defs  # kept for GetModelMetadata
    assert set(bundle.signatures) == set(functions)
    assert {request.signature_name for request in requests} == set(functions)
    for request in requests:
        name = request.signature_name
        function = functions[name]
        assert bundle.signatures[name].specs == signature_specs(function)
        outputs = list(bundle.signatures[name].specs.outputs)
        got = bundle.run(name, request.inputs, outputs)
        expected = function(**{key: tf.constant(value) for key, value in request.inputs.items()})
        for key in outputs:
            want = expected[key].numpy()
            if want.dtype == object:
                np.testing.assert_array_equal(got[key], want, err_msg=f"{name}.{key}")
            else:
                np.testing.assert_allclose(got[key], want, rtol=1e-5, err_msg=f"{name}.{key}")


def test_thread_pool_sizes_reach_the_session_and_change_no_answer(version_dirs):
    default = load_session_bundle(version_dirs[BRUTE_FORCE])
    single = load_session_bundle(version_dirs[BRUTE_FORCE], intra_op_threads=1, inter_op_threads=1)
    request = {"user_id": np.array([b"1", b"2", b"unseen"], dtype=object)}

    assert single.session._config.intra_op_parallelism_threads == 1
    assert single.session._config.inter_op_parallelism_threads == 1
    want = default.run("serving_default", request, ["scores", "item_ids"])
    got = single.run("serving_default", request, ["scores", "item_ids"])
    np.testing.assert_array_equal(got["item_ids"], want["item_ids"])
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-6, atol=1e-6)


def test_a_bad_input_fails_as_tensorflow_reports_it(version_dirs):
    bundle = load_session_bundle(version_dirs[BRUTE_FORCE])

    with pytest.raises(ValueError, match="Cannot feed value of shape"):
        bundle.run("serving_default", {"user_id": np.array([[b"1"]], dtype=object)}, ["scores"])


_LOAD_AND_DROP = textwrap.dedent(
    """
    import ctypes, gc, sys
    from export.loading import load_saved_model, load_session_bundle

    def rss_kib():
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmRSS"))

    load = {"bundle": load_session_bundle, "tf2": load_saved_model}[sys.argv[2]]
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    for round in range(int(sys.argv[3])):
        model = load(sys.argv[1])
        del model
        gc.collect()
        trim(0)
        if round == 2:  # after the first loads: imports, caches, op registrations
            settled = rss_kib()
    print(rss_kib() - settled)
    """
)


def _growth_kib(version_dir: Path, loader: str, loads: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_DROP, str(version_dir), loader, str(loads)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc")
def test_a_version_loaded_and_dropped_again_and_again_gives_its_memory_back(version_dirs):
    version = version_dirs[SCANN]
    saved_model_kib = (version / "saved_model.pb").stat().st_size // 1024

    growth = _growth_kib(version, "bundle", loads=15)

    # Over the 12 loads after the third, measured on this fixture (a 2.1 MB graph):
    # `tf.saved_model.load` kept 7,388 KiB (3.5 graphs), the bundle 252 KiB.
    assert growth < saved_model_kib, growth
