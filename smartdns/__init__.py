"""smartdns: a GeoIP-aware authoritative DNS server for mail domains."""

__version__ = "0.2.0"  # the one place it is written: pyproject.toml reads it; CHANGELOG.md and the git tag v0.2.0 follow it
