"""Command-line interface of stream-spk (``stream-spk --help``)."""
