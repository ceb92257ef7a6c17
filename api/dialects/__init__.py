"""One module per dialect (see ../shared/api-reference/README.md); each owns its routes."""
