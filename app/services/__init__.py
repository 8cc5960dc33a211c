"""Services: ingest, batch, analytics and export, composing lvt_core with the store."""
