"""config.py in-process: defaults, the file, flags over the file, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartdns.config import Config, ConfigError, ListenAddress, load_config, parse_listen


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smartdns.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_the_documented_defaults():
    config = load_config()
    assert config == Config()
    assert config.listen == (ListenAddress("127.0.0.1", 5353),)
    assert config.zones == Path("zones") and config.ecs and config.geodb == ()
    assert config.metrics == ListenAddress("127.0.0.1", 9353)
    assert not config.rrl.enabled


def test_relative_paths_are_relative_to_the_file_and_flags_win(tmp_path):
    path = write(tmp_path, "zones: z\nlisten: ['127.0.0.1:5300']\n")
    config = load_config(path)
    assert config.zones == tmp_path / "z"
    assert config.listen == (ListenAddress("127.0.0.1", 5300),)
    overridden = load_config(path, listen=["[::1]:53"], zones="other")
    assert overridden.listen == (ListenAddress("::1", 53),) and overridden.zones == Path("other")


def test_soa_settings_per_zone_override_the_common_ones(tmp_path):
    path = write(tmp_path, "soa:\n  ttl: 600\n  zones:\n    example.net:\n      minimum: 60\n")
    config = load_config(path)
    assert config.soa_for("example.com").ttl == 600
    assert (config.soa_for("Example.NET.").ttl, config.soa_for("example.net").minimum) == (600, 60)


@pytest.mark.parametrize(("text", "where", "what"), [
    ("listen: ['127.0.0.1:5300']\nbogus: 1\n", ":2: bogus", "unknown setting"),
    ("health:\n  interval: 0\n", ":2:", "interval"),
    ("rrl:\n  responses_per_second: 5\n  slip: 11\n", ":3:", "slip"),
    ("listen: ['localhost:53']\n", ":1: listen", "not an IP address"),
    ("- a list\n", ":1:", "mapping"),
])
def test_errors_name_the_file_line_and_setting(tmp_path, text, where, what):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{where}"), message
    assert what in message, message


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:53", ListenAddress("127.0.0.1", 53)),
    ("[::1]:5353", ListenAddress("::1", 5353)),
    ("0.0.0.0:0", ListenAddress("0.0.0.0", 0)),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:65536", ":53", "[::1]53"])
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        parse_listen(text)
