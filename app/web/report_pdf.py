"""The follow-up report as a PDF/A document, for a chart or an archive that files documents.

A hospital's record takes PDF, not web pages, and a tumor board's minutes keep what was shown.
WeasyPrint lays out the report's own HTML (:mod:`app.web.report`), so the PDF holds what the
HTML file shows, on A4 pages. PDF/A-3a embeds the fonts, an sRGB output intent and XMP metadata
(title, author), so an archive can render it in years to come without the fonts of the machine
that made it; its level A tags the structure (headings, tables, figures with their alt text)
and the language, so a screen reader reads the report in order.
"""

from __future__ import annotations

import ctypes.util
import functools
import importlib.util

PDF_VARIANT = "pdf/a-3a"
"""The archival PDF profile written: PDF/A-3, level A (accessible: tagged, with Unicode text)."""


class PdfUnavailableError(RuntimeError):
    """This machine cannot lay out PDF (WeasyPrint or the Pango it loads is missing)."""


_NATIVE_LIBRARIES = ("gobject-2.0", "pango-1.0", "pangoft2-1.0", "harfbuzz")
"""What WeasyPrint loads through cffi when it is imported."""


@functools.cache
def unavailable_reason() -> str | None:
    """Why no PDF can be made here, or None, asked once per process so the page can grey out
    its button instead of failing: WeasyPrint loads Pango at import, and a machine without it
    (a slim image) fails there. Where the system's library search finds them all (a few ms),
    that is the answer; elsewhere (a Mac's Homebrew prefix) importing WeasyPrint decides."""
    if importlib.util.find_spec("weasyprint") is None:
        return "PDF needs WeasyPrint, which is not installed (pip install weasyprint). The HTML report works without it"
    if all(ctypes.util.find_library(name) for name in _NATIVE_LIBRARIES):
        return None
    try:
        import weasyprint  # noqa: F401  (0.7 s: only where the search above found no Pango)
    except (ImportError, OSError) as exc:
        return (f"PDF needs the Pango library ({type(exc).__name__}: {str(exc).splitlines()[0]}); on Debian: "
                "apt install libpango-1.0-0 libpangoft2-1.0-0. The HTML report works without it")
    return None


def report_pdf(html: str) -> bytes:
    """The PDF/A-3a rendering of a report made by :func:`app.web.report.followup_report`. Only
    ``data:`` URIs are fetched: the report embeds every image it shows, so anything else would
    be a defect, and a file or server it names is never read. Raises PdfUnavailableError with
    :func:`unavailable_reason` where no PDF can be made."""
    if (reason := unavailable_reason()) is not None:
        raise PdfUnavailableError(reason)
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)
    return HTML(string=html, url_fetcher=fetcher).write_pdf(pdf_variant=PDF_VARIANT)
