"""One module per `dbrt` subcommand (see pipeline.cli)."""
