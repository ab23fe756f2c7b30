"""The REST port's settings: the bearer token's file and the bound on waiting callers."""

from __future__ import annotations

from pathlib import Path

import pytest

from mstc_worker.errors import ConfigError
from tests.unit.conftest import MakeSettings


def test_without_a_token_file_there_is_no_token(make_settings: MakeSettings) -> None:
    settings = make_settings()
    assert settings.http_token is None
    assert settings.http_max_waiting == 16


def test_the_token_is_read_from_its_file_without_the_trailing_newline(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text("a-token-of-some-length\n")
    assert make_settings(MSTC_HTTP_TOKEN_FILE=str(path)).http_token == "a-token-of-some-length"


def test_the_token_stays_out_of_repr(make_settings: MakeSettings, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("a-token-of-some-length")
    settings = make_settings(MSTC_HTTP_TOKEN_FILE=str(path))
    assert "a-token-of-some-length" not in repr(settings)


@pytest.mark.parametrize("content", ["", "   \n", "short-token"])
def test_an_empty_or_short_token_is_refused_without_echoing_it(
    make_settings: MakeSettings, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(ConfigError, match="MSTC_HTTP_TOKEN_FILE") as raised:
        make_settings(MSTC_HTTP_TOKEN_FILE=str(path))
    assert content.strip() == "" or content not in str(raised.value)


def test_a_missing_token_file_is_refused(make_settings: MakeSettings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MSTC_HTTP_TOKEN_FILE"):
        make_settings(MSTC_HTTP_TOKEN_FILE=str(tmp_path / "nope"))


def test_the_waiting_bound_is_at_least_one(make_settings: MakeSettings) -> None:
    with pytest.raises(ConfigError, match="MSTC_HTTP_MAX_WAITING"):
        make_settings(MSTC_HTTP_MAX_WAITING="0")
