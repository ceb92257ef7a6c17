"""Providers files for the LLM and embedding route tests: chat models and an embedding model
(typed and priced in the file), served by one or more stand-ins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from storage.db import Database
from storage.models import Usage
from tests.conftest import eventually

CHAT_MODELS = ["mock/echo", "mock/other"]
EMBED = "mock/embed"
EMBED_PRICE = 100.0  # US dollars per million prompt tokens


def write_llm_providers(path: Path, *providers: tuple[str, str]) -> Path:
    """`(name, base_url)` providers in order, each serving the chat models and `EMBED`."""
    models = ", ".join(f'"{m}"' for m in [*CHAT_MODELS, EMBED])
    entries = [
        "[[providers]]\n"
        f'name = "{name}"\n'
        'kind = "openai"\n'
        f'base_url = "{base_url}"\n'
        f"models = [{models}]\n"
        f'meta = {{ "{EMBED}" = {{ type = "embedding" }} }}\n'
        f'prices = {{ "{EMBED}" = {{ prompt = {EMBED_PRICE} }} }}\n'
        for name, base_url in providers
    ]
    path.write_text("\n".join(entries))
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def usage_row(database_url: str, job_id: str) -> Any:
    """The usage row the workers' persister writes for a finished job (waited for)."""
    db = Database(database_url)
    try:

        async def find() -> Any:
            async with db.engine.connect() as conn:
                table = Usage.__table__
                return (await conn.execute(table.select().where(table.c.job_id == job_id))).first()

        return await eventually(find, what=f"the usage row of job {job_id}")
    finally:
        await db.dispose()


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    if param is not None:
        assert error["param"] == param, error
        assert param.lower() in error["message"].lower()
    return error  # type: ignore[no-any-return]
