"""DNSSEC: zone keys (keys), signing windows (sign), the NSEC chain (denial), a signed zone (zone)."""
