"""The edgeside decision server: the ASGI app, its configuration and the `edgeside` command."""
