"""What each route answers on success, as msgspec Structs, one module per dialect, for the
OpenAPI schema only (`docs(answers=...)`): the routes build their answers as dicts, these
Structs say what those dicts hold. schemathesis (tests/test_schemathesis.py) checks every
answer against them."""
