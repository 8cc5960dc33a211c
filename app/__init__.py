"""The LVT application: CLI, services that compose lvt_core and db, and the web app."""
