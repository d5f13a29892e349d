"""One worker process of `serving.server.supervisor`: an embedded server on shared ports.

Run as `python -m serving.server.worker --index I --ready-fd FD --config JSON` by the supervisor
only: the config (`config_to_json`) names the reserved ports and `reuse_port`. The worker writes
"ready" to FD once its server answers, serves until SIGTERM or SIGINT, drains, exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from serving.server.config import config_from_json
from tfrs_model.errors import ConfigError

# TensorFlow's and absl's Python loggers, lowered as `twotower` lowers them.
_NOISY_LOGGERS = ("tensorflow", "absl", "h5py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.server.worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--config", required=True, help="ServingConfig as config_to_json")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [worker {args.index}] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        config = config_from_json(json.loads(args.config))
    except (ValueError, TypeError, ConfigError) as error:
        print(f"serving.server.worker: bad --config: {error}", file=sys.stderr)
        return 2
    ready = os.fdopen(args.ready_fd, "wb", buffering=0)

    def tell_ready(_ports: object) -> None:
        ready.write(b"ready\n")
        ready.close()

    from serving.server.server import run_until_signal  # imports TensorFlow: only here

    try:
        return run_until_signal(config, on_ready=tell_ready)
    except ConfigError as error:
        print(f"serving.server.worker {args.index}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
