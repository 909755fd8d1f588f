"""How a snapshot is activated: the pipeline (`Lifecycle.ingest`), the admin API, pull mode."""
