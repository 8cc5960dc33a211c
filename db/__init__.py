"""SQLAlchemy models, engine set-up and query functions for the LVT store."""
