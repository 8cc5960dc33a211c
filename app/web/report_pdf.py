"""The follow-up report as a PDF/A document, for a chart or an archive that files documents.

A hospital's record takes PDF, not web pages, and a tumor board's minutes keep what was shown.
WeasyPrint lays out the report's own HTML (:mod:`app.web.report`), so the PDF holds what the
HTML file shows, on A4 pages. PDF/A-3a embeds the fonts, an sRGB output intent and XMP metadata
(title, author), so an archive can render it in years to come without the fonts of the machine
that made it; its level A tags the structure (headings, tables, figures with their alt text)
and the language, so a screen reader reads the report in order.
"""

from __future__ import annotations

PDF_VARIANT = "pdf/a-3a"
"""The archival PDF profile written: PDF/A-3, level A (accessible: tagged, with Unicode text)."""


def report_pdf(html: str) -> bytes:
    """The PDF/A-3a rendering of a report made by :func:`app.web.report.followup_report`. Only
    ``data:`` URIs are fetched: the report embeds every image it shows, so anything else would
    be a defect, and a file or server it names is never read."""
    from weasyprint import HTML  # a second or so to import: loaded when a PDF is asked for
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols={"data"}, fail_on_errors=True)
    return HTML(string=html, url_fetcher=fetcher).write_pdf(pdf_variant=PDF_VARIANT)
