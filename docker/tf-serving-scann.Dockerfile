# syntax=docker/dockerfile:1.7
# TensorFlow Serving 2.20 with the ScaNN TensorFlow ops linked into the model server, for
# SavedModels exported with `twotower export --index scann` (k8s/overlays/scann). Stock
# tensorflow/serving images cannot load those ops, and Google's google/tf-serving-scann images
# stopped at TF Serving 2.11.
#
# TF Serving links custom ops statically: the ops' cc_library (alwayslink) is added to
# SUPPORTED_TENSORFLOW_OPS in tensorflow_serving/model_servers/BUILD and the model server is
# rebuilt with Bazel. This follows, adapted to 2.20:
#   - ScaNN's own TF Serving build, google-research/google-research scann/tf_serving/:
#     Dockerfile.devel (build on the tensorflow/serving devel image, AVX2/FMA copts),
#     patches/serving.patch (ScaNN as repository `com_google_scann`, its target
#     @com_google_scann//scann/scann_ops/cc:scann_ops_static in SUPPORTED_TENSORFLOW_OPS) and
#     patches/scann/tf_serving.patch (the scann_ops_static target; TensorFlow from the source
#     tree instead of the pip package; no pybind targets);
#   - TF Serving's guide "Serving TensorFlow models with custom ops" (docs/custom_op.md).
#
# Build from the repository root (hours and ~16 GB of RAM; BuildKit caches Bazel between builds):
#   docker build -f docker/tf-serving-scann.Dockerfile -t ghcr.io/your-org/tf-serving-scann:2.20.0 .
#
# The ScaNN sources must match the `scann` pip package the model was exported with (pyproject:
# scann 1.4.2): set SCANN_COMMIT to the google-research commit of that release.

ARG TF_SERVING_VERSION=2.20.0
# The runtime must be the Ubuntu release the devel image builds on (glibc, libstdc++).
ARG UBUNTU_VERSION=22.04

FROM tensorflow/serving:${TF_SERVING_VERSION}-devel AS build
# The devel image carries the TF Serving sources of its release in /tensorflow-serving, the
# Bazel they build with, and a compiler.
ARG SCANN_REPO=https://github.com/google-research/google-research.git
# CHANGE ME when upgrading `scann` in pyproject.toml: the google-research commit of that release.
ARG SCANN_COMMIT=634a79fb5b4b23237a81eac028d27b5d34a5dba4
ARG TF_SERVING_BUILD_OPTIONS="--config=release --copt=-mavx2 --copt=-mfma"
ARG TF_SERVING_BAZEL_OPTIONS=""

# ScaNN's sources only (sparse checkout of scann/ from google-research at SCANN_COMMIT).
RUN git init -q /opt/google-research \
    && cd /opt/google-research \
    && git remote add origin "${SCANN_REPO}" \
    && git sparse-checkout set --no-cone /scann \
    && git fetch -q --depth 1 --filter=blob:none origin "${SCANN_COMMIT}" \
    && git checkout -q FETCH_HEAD \
    && test -f scann/scann/scann_ops/cc/BUILD.bazel

# Make ScaNN's Bazel packages build inside the TF Serving workspace (patches/scann/tf_serving.patch):
# TensorFlow comes from @org_tensorflow instead of the pip package (@local_config_tf), Eigen
# under TensorFlow's repository name, no pybind targets, and one static target with the ops and
# their kernels.
RUN python3 - <<'PY'
import pathlib
import re

root = pathlib.Path("/opt/google-research/scann")
for build in root.rglob("BUILD.bazel"):
    text = original = build.read_text()
    text = text.replace('"@local_config_tf//:libtensorflow_framework"',
                        '"@org_tensorflow//tensorflow/core:framework"')
    text = re.sub(r'\n\s*"@local_config_tf//:tf_header_lib",', "", text)
    text = text.replace('"@eigen"', '"@eigen_archive//:eigen3"')
    text = text.replace('"@eigen//:eigen"', '"@eigen_archive//:eigen3"')
    text = re.sub(r'load\("@pybind11_bazel//[^)]*\)\n', "", text)
    text = re.sub(r'\npybind_(library|extension)\((?:.|\n)*?\n\)\n', "\n", text)
    if text != original:
        build.write_text(text)

ops = root / "scann/scann_ops/cc/BUILD.bazel"
ops.write_text(ops.read_text() + '''
cc_library(
    name = "scann_ops_static",
    visibility = ["//visibility:public"],
    deps = [
        ":scann_ops",
        ":scann_ops_kernels",
    ],
    alwayslink = 1,
)
''')
for name in ("WORKSPACE", "WORKSPACE.bazel", "REPO.bazel"):
    if (root / name).exists():
        break
else:
    (root / "WORKSPACE").write_text('workspace(name = "com_google_scann")\n')
PY

# Register ScaNN (and the one dependency TensorFlow's workspace lacks) and link its ops into the
# model server (patches/serving.patch).
WORKDIR /tensorflow-serving
RUN cat >> WORKSPACE <<'BZL'

# ScaNN TensorFlow ops (docker/tf-serving-scann.Dockerfile).
load("@bazel_tools//tools/build_defs/repo:git.bzl", "git_repository")
load("@bazel_tools//tools/build_defs/repo:utils.bzl", "maybe")

local_repository(
    name = "com_google_scann",
    path = "/opt/google-research/scann",
)

maybe(
    git_repository,
    name = "cnpy",
    commit = "57184ee0db37cac383fc29175950747a46a8b512",
    remote = "https://github.com/sammymax/cnpy.git",
)
BZL
RUN sed -i 's|^SUPPORTED_TENSORFLOW_OPS = |SUPPORTED_TENSORFLOW_OPS = ["@com_google_scann//scann/scann_ops/cc:scann_ops_static"] + |' \
        tensorflow_serving/model_servers/BUILD \
    && grep -q '@com_google_scann//scann/scann_ops/cc:scann_ops_static' \
        tensorflow_serving/model_servers/BUILD

RUN --mount=type=cache,target=/root/.cache/bazel \
    bazel build --color=yes --curses=no --verbose_failures \
        --output_filter=DONT_MATCH_ANYTHING \
        ${TF_SERVING_BAZEL_OPTIONS} \
        ${TF_SERVING_BUILD_OPTIONS} \
        tensorflow_serving/model_servers:tensorflow_model_server \
    && install -m 0755 bazel-bin/tensorflow_serving/model_servers/tensorflow_model_server \
        /usr/local/bin/tensorflow_model_server \
    && /usr/local/bin/tensorflow_model_server --version \
    && grep -q 'Scann>ScannSearchBatched' /usr/local/bin/tensorflow_model_server

FROM ubuntu:${UBUNTU_VERSION}
ARG TF_SERVING_VERSION
ARG SCANN_COMMIT
LABEL org.opencontainers.image.title="tf-serving-scann" \
      org.opencontainers.image.description="TensorFlow Serving ${TF_SERVING_VERSION} with the ScaNN ops" \
      org.opencontainers.image.version="${TF_SERVING_VERSION}" \
      io.github.google-research.scann.commit="${SCANN_COMMIT}"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 serving \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin serving
# Same path as in the stock image, so the manifests run either image with the same command.
COPY --from=build /usr/local/bin/tensorflow_model_server /usr/bin/tensorflow_model_server
ENV TF_USE_LEGACY_KERAS=1
USER 65532:65532
EXPOSE 8500 8501
ENTRYPOINT ["/usr/bin/tensorflow_model_server"]
CMD ["--port=8500", "--rest_api_port=8501", "--model_name=twotower", "--model_base_path=/models/twotower"]
