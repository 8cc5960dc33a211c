"""Logging to stderr through rich, so stdout stays clean for ``--json`` output."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

stderr_console = Console(stderr=True)


def configure_logging(level: str = "INFO") -> None:
    """Send log records to stderr; quiet noisy third-party loggers."""
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=stderr_console, show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, handlers=[handler], force=True)
    for noisy in ("distributed", "matplotlib", "PIL", "urllib3", "alembic.runtime.migration", "weasyprint", "fontTools"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
