"""The HTTP edge: Litestar app, one module per dialect, auth, validation, error rendering."""
