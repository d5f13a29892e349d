"""One module per `twotower` subcommand; each exposes `register(subparsers)`."""
