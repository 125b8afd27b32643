"""smartdns: a GeoIP-aware authoritative DNS server for mail domains."""

__version__ = "0.1.0"
