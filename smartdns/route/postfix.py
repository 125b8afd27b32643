"""`smartdns route postfix-config`: the main.cf lines, master.cf services and tables to paste.

Per relay R two services, both the stock `smtp` client:
- `smartdns-direct-R`: direct delivery with `smtp_fallback_relay = [R]:port`, used in the same
  attempt once every MX failed softly, and `smtp_reply_filter` turning "blocked" 5xx into 4xx
  so that those fall back instead of bouncing;
- `smartdns-relay-R`: straight to R (the socketmap answer names the next hop), TLS required and
  verified (`secure` with the relay's CA, or `fingerprint`), SASL authentication.
The fallback relay in the direct service gets the same TLS and SASL settings, since one smtp
process talks to both.
"""

from __future__ import annotations

from pathlib import Path

from .decide import direct_service, relay_service
from .settings import Relay, RouteSettings

# Replies that mean "your address (range) is not welcome here", not "no such user": rewritten from
# 5xx to 4xx on the direct services only, so the relay gets the message in the same attempt.
BLOCKED_PATTERNS = (
    "block", "blacklist", "blocklist", "denylist", "spamhaus", "spamcop", "barracuda", "sorbs",
    "poor reputation", "reputation", "not allowed to send", "banned", "rbl", "dnsbl",
    "too many connections", "rate limit", "throttl", "your ip",
)


def reply_filter_table() -> str:
    """A regexp table for smtp_reply_filter (POSIX regexp: no pcre package needed)."""
    alternatives = "|".join(p.replace(" ", "[[:space:]]") for p in BLOCKED_PATTERNS)
    return (
        "# smartdns route: \"blocked\" 5xx replies become 4xx, so the fallback relay gets the message.\n"
        "# Used only by the smartdns-direct-* services; each reply line is matched separately.\n"
        f"/^5([0-9][0-9])([ -])5\\.([0-9]{{1,3}}\\.[0-9]{{1,3}})(.*({alternatives}).*)$/ 4${{1}}${{2}}4.${{3}}${{4}}\n"
        f"/^5([0-9][0-9])([ -])(.*({alternatives}).*)$/ 4${{1}}${{2}}${{3}}\n"
    )


def password_map(relays: tuple[Relay, ...]) -> str:
    lines = ["# smartdns route: SASL logins per relay ([host]:port user:password). chmod 600."]
    for relay in relays:
        if relay.username is None:
            continue
        try:
            password = relay.password() or "PASSWORD"
        except OSError:
            password = "PASSWORD"  # the file is for smartdns' eyes; paste the password by hand
        lines.append(f"{relay.nexthop} {relay.username}:{password}")
    return "\n".join(lines) + "\n"


def _tls_options(relay: Relay) -> list[str]:
    options = []
    if relay.ca_file is not None:
        options += ["smtp_tls_security_level=secure", f"smtp_tls_CAfile={relay.ca_file}",
                    "smtp_tls_secure_cert_match=nexthop"]
    else:
        options += ["smtp_tls_security_level=fingerprint", "smtp_tls_fingerprint_digest=sha256",
                    f"smtp_tls_fingerprint_cert_match={relay.fingerprint}"]
    if relay.tls == "wrapper":
        options.append("smtp_tls_wrappermode=yes")
    return options


def _sasl_options(relay: Relay, maps: str) -> list[str]:
    if relay.username is None:
        return []
    return ["smtp_sasl_auth_enable=yes", f"smtp_sasl_password_maps={maps}",
            "smtp_sasl_security_options=noanonymous", "smtp_sasl_tls_security_options=noanonymous"]


def _service(name: str, options: list[str]) -> str:
    lines = [f"{name} unix  -       -       n       -       -       smtp"]
    lines += [f"  -o {option}" for option in options]
    return "\n".join(lines)


def master_cf(settings: RouteSettings, tables: Path) -> str:
    maps = f"texthash:{tables / 'smartdns_relay_passwd'}"
    blocks = []
    for relay in settings.relays:
        direct = [f"syslog_name=postfix/{direct_service(relay.name)}", f"smtp_fallback_relay={relay.nexthop}",
                  f"smtp_reply_filter=regexp:{tables / 'smartdns_reply_filter'}"]
        # The direct hop itself keeps the site's opportunistic TLS; the fallback relay's certificate
        # is checked per destination by the TLS policy table below.
        direct += [f"smtp_tls_policy_maps=texthash:{tables / 'smartdns_relay_tls'}"]
        if relay.ca_file is not None:
            direct.append(f"smtp_tls_CAfile={relay.ca_file}")
        else:
            direct.append("smtp_tls_fingerprint_digest=sha256")
        direct += _sasl_options(relay, maps)
        relayed = [f"syslog_name=postfix/{relay_service(relay.name)}", *_tls_options(relay), *_sasl_options(relay, maps)]
        blocks.append(f"# relay {relay.name}: {relay.nexthop}, serves {', '.join(relay.serves) or 'any'}\n"
                      + _service(direct_service(relay.name), direct) + "\n" + _service(relay_service(relay.name), relayed))
    return "\n".join(blocks) + "\n"


def tls_policy(relays: tuple[Relay, ...]) -> str:
    """smtp_tls_policy_maps for the direct services: the fallback relay is verified like on its own service."""
    lines = ["# smartdns route: the relays' TLS when reached as smtp_fallback_relay"]
    for relay in relays:
        if relay.ca_file is not None:
            lines.append(f"{relay.nexthop} secure match=nexthop")
        else:
            lines.append(f"{relay.nexthop} fingerprint match={relay.fingerprint}")
    return "\n".join(lines) + "\n"


def main_cf(settings: RouteSettings) -> str:
    listen = settings.listen
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    lines = [
        "# smartdns route: ask the routing service for every recipient's transport",
        f"transport_maps = socketmap:inet:{host}:{listen.port}:{settings.map_name}",
        "smtp_tls_loglevel = 1",
    ]
    return "\n".join(lines) + "\n"


def render(settings: RouteSettings, tables: Path = Path("/etc/postfix")) -> str:
    """The whole setup, in sections, ready to paste."""
    parts = [
        "### main.cf (append)\n" + main_cf(settings),
        "### master.cf (append)\n" + master_cf(settings, tables),
        f"### {tables / 'smartdns_reply_filter'}\n" + reply_filter_table(),
        f"### {tables / 'smartdns_relay_tls'}\n" + tls_policy(settings.relays),
    ]
    if any(r.username for r in settings.relays):
        parts.append(f"### {tables / 'smartdns_relay_passwd'}  (chmod 600 root)\n" + password_map(settings.relays))
    parts.append("### then: postfix check && postfix reload")
    return "\n".join(parts) + "\n"
