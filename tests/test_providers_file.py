"""The providers file is checked at startup, and every mistake in it is named clearly; the CLI
turns such a mistake (or a bad command line) into exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from switchyard.cli import build_parser, main
from switchyard.errors import ConfigError
from switchyard.providers import default_providers, load_providers, parse_providers

GOOD = """
[[providers]]
name = "first"
kind = "openai"
base_url = "http://127.0.0.1:1/v1/"
api_key = "env:SY_TEST_PROVIDER_KEY"
models = ["m/a", "m/b"]

[[providers]]
name = "second"
kind = "openai"
base_url = "https://example.invalid/v1"
models = ["m/b"]

[[providers]]
name = "discovered"
kind = "openai"
base_url = "https://example.invalid/other"
"""


def test_a_good_file_routes_each_model_to_its_providers_in_file_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_providers(GOOD, "providers.toml")
    assert [p.name for p in config.serving("m/b")] == ["first", "second"]
    assert [p.name for p in config.serving("m/a")] == ["first"]
    assert config.serving("m/unknown") == []
    assert config.static_models() == {"m/a", "m/b"}
    first = config.providers[0]
    assert first.base_url == "http://127.0.0.1:1/v1"  # trailing slash dropped
    monkeypatch.setenv("SY_TEST_PROVIDER_KEY", "sk-from-env")
    assert first.resolved_api_key() == "sk-from-env"
    assert config.providers[2].models is None  # discovered at run time


def test_unknown_kind_names_the_entry_and_the_known_kinds() -> None:
    text = '[[providers]]\nname = "x"\nkind = "nope"\nbase_url = "http://h/v1"\n'
    with pytest.raises(ConfigError) as info:
        parse_providers(text, "p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: providers[0] ('x'): kind:")
    assert "unknown kind 'nope'" in message
    assert "known kinds: openai" in message


def test_missing_base_url_is_reported_as_required() -> None:
    text = '[[providers]]\nname = "x"\nkind = "openai"\n'
    with pytest.raises(ConfigError, match=r"p\.toml: providers\[0\] \('x'\): base_url: is required"):
        parse_providers(text, "p.toml")


def test_duplicate_name_is_reported_on_the_second_entry() -> None:
    text = (
        '[[providers]]\nname = "a"\nkind = "openai"\nbase_url = "http://h/v1"\n'
        '[[providers]]\nname = "a"\nkind = "openai"\nbase_url = "http://other/v1"\n'
    )
    with pytest.raises(ConfigError, match=r"providers\[1\] \('a'\): duplicate provider name 'a'"):
        parse_providers(text, "p.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("this is = = not toml", "p.toml: not valid TOML"),
        ("", "expected at least one [[providers]] table"),
        ("providers = 3", "expected at least one [[providers]] table"),
        (
            '[[providers]]\nname = "x"\nkind = "openai"\nbase_url = "ftp://h"\n',
            "base_url must start with http://",
        ),
        (
            '[[providers]]\nname = "x"\nkind = "openai"\nbase_url = "http://h"\nmodel = "typo"\n',
            "model: is not a known field",
        ),
        ('[[providers]]\nname = ""\nkind = "openai"\nbase_url = "http://h"\n', "name:"),
        ('[[providers]]\nkind = "openai"\nbase_url = "http://h"\n', "providers[0]: name: is required"),
        ('[[providers]]\nname = "x"\nkind = "openai"\nbase_url = "http://h"\ntimeout_s = 0\n', "timeout_s:"),
    ],
)
def test_other_mistakes_are_config_errors_that_say_what_is_wrong(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_providers(text, "p.toml")
    assert expected in str(info.value)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read providers file"):
        load_providers(tmp_path / "missing.toml")


def test_without_a_file_the_keyless_public_provider_is_used() -> None:
    assert load_providers(None) == default_providers()
    assert default_providers().providers[0].base_url.startswith("https://")


# --- the command line ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [[], ["nope"], ["worker", "--queue", "urgent"], ["keys"], ["keys", "revoke"], ["web", "--port", "x"]],
)
def test_command_line_mistakes_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: switchyard" in capsys.readouterr().err


def test_the_documented_subcommands_exist() -> None:
    parser = build_parser()
    for argv in (
        ["up"],
        ["web"],
        ["worker", "--queue", "batch"],
        ["migrate"],
        ["keys", "list"],
        ["keys", "create", "n"],
    ):
        assert parser.parse_args(argv).func is not None


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "REDIS_URL", "DATABASE_URL"))
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "switchyard.cli", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


BAD_KIND = '[[providers]]\nname = "x"\nkind = "nope"\nbase_url = "http://h/v1"\n'


def test_up_with_a_bad_providers_file_exits_2_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "providers.toml"
    bad.write_text(BAD_KIND)
    result = _run_cli(
        ["up"], {"SWITCHYARD_PROVIDERS": str(bad), "SWITCHYARD_DATA_DIR": str(tmp_path / "data")}, tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "unknown kind 'nope'" in result.stderr
    assert not (tmp_path / "data" / "redis").exists()  # no embedded Redis was started


def test_worker_with_a_bad_providers_file_exits_2(tmp_path: Path, redis_url: str) -> None:
    bad = tmp_path / "providers.toml"
    bad.write_text(BAD_KIND)
    env = {
        "SWITCHYARD_PROVIDERS": str(bad),
        "REDIS_URL": redis_url,
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
    }
    result = _run_cli(["worker", "--queue", "interactive"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "unknown kind 'nope'" in result.stderr


META = """
[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
models = ["m/chat", "m/embed", "m/chat-large"]

[providers.meta."m/embed"]
type = "embedding"
company = "Acme"

[providers.meta."m/chat-large"]
context_length = 128000
supports_thinking = true
capabilities = ["vision"]
"""


async def test_per_model_metadata_gives_types_and_the_catalog_checks_them() -> None:
    from jobs.catalog import Catalog
    from switchyard.errors import InvalidRequest, ModelNotFound

    catalog = Catalog(parse_providers(META))
    assert catalog.model_type("m/chat") == "chat"  # an openai provider's default
    assert catalog.model_type("m/embed") == "embedding"
    assert catalog.model_meta("m/embed").company == "Acme"
    assert catalog.model_meta("m/chat-large").context_length == 128000
    assert catalog.model_meta("m/chat-large").supports_thinking is True
    assert await catalog.require("m/embed", "embedding") == "embedding"

    with pytest.raises(InvalidRequest) as wrong:
        await catalog.require("m/embed", "chat", "completion")
    assert wrong.value.param == "model"
    assert "embedding model" in wrong.value.message

    with pytest.raises(ModelNotFound) as unknown:
        await catalog.require("m/chat-larg", "chat")
    assert unknown.value.suggestions[0] == "m/chat-large"
    assert "m/embed" not in unknown.value.suggestions  # only models the route could take
    assert unknown.value.status_code == 404


def test_unknown_metadata_fields_are_named() -> None:
    with pytest.raises(ConfigError, match=r"meta\.m/chat\.colour: is not a known field"):
        parse_providers(META + '\n[providers.meta."m/chat"]\ncolour = "red"\n')
