"""The `route:` section of smartdns.yaml: settings of the Postfix routing service.

Parsed into immutable dataclasses; every error names file and line, like the rest of the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, HealthSettings, ListenAddress, parse_listen
from ..yamlfile import LineDict

MAP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RELAY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")  # becomes part of a master.cf service name
FINGERPRINT = re.compile(r"^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$")  # SHA-256, as Postfix prints it
GEO = re.compile(r"^[A-Z]{2}(-[A-Z]{2}(-[A-Z0-9]{1,3})?)?$")


@dataclass(frozen=True, slots=True)
class TroubleSettings:
    failures: int = 3  # failures within `window` seconds that mark a destination troubled
    window: float = 600.0
    cooldown: float = 1800.0  # how long a troubled destination is sent straight to a relay


@dataclass(frozen=True, slots=True)
class Relay:
    name: str  # "us": services smartdns-direct-us and smartdns-relay-us
    host: str  # name or address Postfix connects to (as [host]:port, no MX lookup)
    port: int = 587
    serves: tuple[str, ...] = ()  # geos of destination MX locations this relay is preferred for
    tls: str = "starttls"  # "starttls" (port 587/25) or "wrapper" (implicit TLS, port 465)
    ca_file: Path | None = None  # CA that signed the relay's certificate (secure level)
    fingerprint: str | None = None  # or its certificate's SHA-256 fingerprint (fingerprint level)
    username: str | None = None  # SASL login; None: no authentication
    password_file: Path | None = None  # holds the SASL password (one line)

    @property
    def nexthop(self) -> str:
        return f"[{self.host}]:{self.port}"

    def password(self) -> str | None:
        if self.password_file is None:
            return None
        return self.password_file.read_text().strip()


@dataclass(frozen=True, slots=True)
class RouteSettings:
    listen: ListenAddress = ListenAddress("127.0.0.1", 10027)
    map_name: str = "route"  # the NAME in transport_maps = socketmap:inet:HOST:PORT:NAME
    home: tuple[str, ...] = ()  # geos that count as domestic, e.g. ("AS-CN",)
    local_domains: tuple[str, ...] = ()  # ours besides the zones directory's
    resolvers: tuple[ListenAddress, ...] = ()  # empty: the system's (resolv.conf); else port 53 unless given
    postfix_log: Path | None = None  # None: no trouble learning from the log
    postfix_config_directory: Path | None = None  # for `postqueue -c`; None: Postfix's default
    state_file: Path | None = None  # troubled destinations across restarts; None: kept in memory
    metrics: ListenAddress | None = ListenAddress("127.0.0.1", 9354)
    lookup_deadline: float = 0.3  # seconds an MX lookup may take before Postfix gets the default answer
    retry_delay: float = 30.0  # no `postqueue -i` sooner than this after our last answer for the domain
    relays: tuple[Relay, ...] = ()
    trouble: TroubleSettings = TroubleSettings()
    health: HealthSettings | None = None  # None: the top-level `health:` timing

    def relay(self, name: str) -> Relay | None:
        return next((r for r in self.relays if r.name == name), None)


_KEYS = {"listen", "map", "home", "local_domains", "resolvers", "postfix_log", "postfix_config_directory",
         "state_file", "metrics", "lookup_deadline", "retry_delay", "relays", "trouble", "health"}
_RELAY_KEYS = {"name", "host", "port", "serves", "tls", "ca_file", "fingerprint", "username", "password_file"}


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _positive(value: Any, at: str, integer: bool = False) -> Any:
    ok = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok) or value <= 0:
        raise ConfigError(f"{at}: must be {'an integer' if integer else 'a number'} > 0, got {value!r}")
    return value


def _geos(value: Any, at: str) -> tuple[str, ...]:
    items = _list(value)
    for item in items:
        if not isinstance(item, str) or not GEO.match(item):
            raise ConfigError(f"{at}: {item!r} is not a geo code (CONTINENT, CONTINENT-COUNTRY, e.g. AS-CN)")
    return tuple(items)


def _domain(value: Any, at: str) -> str:
    if not isinstance(value, str) or not value.strip(".") or " " in value:
        raise ConfigError(f"{at}: {value!r} is not a domain name")
    return value.lower().rstrip(".")


def _resolver(value: Any, at: str) -> ListenAddress:
    """A resolver address, port 53 unless given (`ADDR`, `ADDR:PORT`, `[V6]:PORT`)."""
    import ipaddress

    text = str(value)
    try:
        return ListenAddress(str(ipaddress.ip_address(text)), 53)
    except ValueError:
        pass
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise ConfigError(f"{at}: {exc} (use `system` or a list of resolver addresses)") from None


def parse_route(data: Any, path: Path, line: int, health_default: HealthSettings) -> RouteSettings:
    """The `route:` mapping -> RouteSettings; relative paths are relative to the config file."""
    from ..config import _settings  # the shared numbers-checked dataclass builder

    if data is None:
        return RouteSettings()
    if not isinstance(data, LineDict):
        raise ConfigError(f"{path}:{line}: route: must be a mapping")
    base = path.parent
    out: dict[str, Any] = {}
    for key, value in data.items():
        at = f"{path}:{data.line_of(key)}: route {key}"
        if key not in _KEYS:
            raise ConfigError(f"{at}: unknown key (known: {', '.join(sorted(_KEYS))})")
        if key in ("listen", "metrics"):
            if key == "metrics" and value in (False, None):
                out[key] = None
                continue
            try:
                out[key] = parse_listen(value)
            except ValueError as exc:
                raise ConfigError(f"{at}: {exc}") from None
        elif key == "map":
            if not isinstance(value, str) or not MAP_NAME.match(value):
                raise ConfigError(f"{at}: must be a map name of letters, digits, '_', '.', '-'")
            out["map_name"] = value
        elif key == "home":
            out[key] = _geos(value, at)
        elif key == "local_domains":
            out[key] = tuple(_domain(d, at) for d in _list(value))
        elif key == "resolvers":
            if value == "system" or value is None:
                out[key] = ()
                continue
            out[key] = tuple(_resolver(item, at) for item in _list(value))
        elif key in ("postfix_log", "postfix_config_directory", "state_file"):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{at}: must be a path")
            out[key] = None if value is None else base / value
        elif key in ("lookup_deadline", "retry_delay"):
            out[key] = float(_positive(value, at))
        elif key == "trouble":
            trouble = _settings(TroubleSettings, value, path, data.line_of(key), TroubleSettings())
            if trouble.failures < 1 or trouble.window <= 0 or trouble.cooldown <= 0:
                raise ConfigError(f"{at}: failures must be >= 1, window and cooldown > 0 seconds")
            out[key] = trouble
        elif key == "health":
            out[key] = _settings(HealthSettings, value, path, data.line_of(key), health_default)
        elif key == "relays":
            if not isinstance(value, list):
                raise ConfigError(f"{at}: must be a list of relays")
            relays = tuple(_relay(item, path, data.line_of(key), base) for item in value)
            names = [r.name for r in relays]
            for name in names:
                if names.count(name) > 1:
                    raise ConfigError(f"{at}: relay name {name!r} is used twice")
            out[key] = relays
    return RouteSettings(**out)


def _relay(data: Any, path: Path, line: int, base: Path) -> Relay:
    if not isinstance(data, LineDict):
        raise ConfigError(f"{path}:{line}: route relays: each relay must be a mapping with name and host")
    at_relay = f"{path}:{data.line}: route relay {data.get('name', '?')!s}"
    for key in ("name", "host"):
        if key not in data:
            raise ConfigError(f"{at_relay}: missing {key}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        at = f"{path}:{data.line_of(key)}: route relay {data.get('name')!s} {key}"
        if key not in _RELAY_KEYS:
            raise ConfigError(f"{at}: unknown key (known: {', '.join(sorted(_RELAY_KEYS))})")
        if key == "name":
            if not isinstance(value, str) or not RELAY_NAME.match(value):
                raise ConfigError(f"{at}: must be 1-31 lower-case letters, digits or '-' (it names Postfix services)")
            out[key] = value
        elif key == "host":
            if not isinstance(value, str) or not value or any(c in value for c in " []/,"):
                raise ConfigError(f"{at}: must be a host name or address")
            out[key] = value.lower().rstrip(".")
        elif key == "port":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ConfigError(f"{at}: must be 1-65535")
            out[key] = value
        elif key == "serves":
            out[key] = _geos(value, at)
        elif key == "tls":
            if value not in ("starttls", "wrapper"):
                raise ConfigError(f"{at}: must be starttls or wrapper (implicit TLS, port 465)")
            out[key] = value
        elif key == "fingerprint":
            if not isinstance(value, str) or not FINGERPRINT.match(value):
                raise ConfigError(f"{at}: must be the certificate's SHA-256 fingerprint, AB:CD:... (32 bytes)")
            out[key] = value.upper()
        elif key == "username":
            if not isinstance(value, str) or not value or any(c.isspace() for c in value):
                raise ConfigError(f"{at}: must be a user name without spaces")
            out[key] = value
        elif key in ("ca_file", "password_file"):
            if not isinstance(value, str):
                raise ConfigError(f"{at}: must be a path")
            file = base / value
            try:
                text = file.read_text()
            except OSError as exc:
                raise ConfigError(f"{at}: cannot read {file}: {exc.strerror}") from None
            if key == "ca_file" and "BEGIN CERTIFICATE" not in text:
                raise ConfigError(f"{at}: {file} holds no PEM certificate")
            if key == "password_file" and not text.strip():
                raise ConfigError(f"{at}: {file} is empty")
            out[key] = file
    if "port" not in out and out.get("tls") == "wrapper":
        out["port"] = 465
    relay = Relay(**out)
    if relay.ca_file is None and relay.fingerprint is None:
        raise ConfigError(f"{at_relay}: needs ca_file or fingerprint: mail goes to a relay only over verified TLS")
    if (relay.username is None) != (relay.password_file is None):
        raise ConfigError(f"{at_relay}: username and password_file go together")
    return relay
