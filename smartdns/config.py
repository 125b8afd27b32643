"""Server settings: defaults, the `smartdns.yaml` file, command-line overrides.

Every key has a default, so no file at all serves `./zones` on 127.0.0.1:5353
with the embedded country data. Relative paths in a file are relative to it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .yamlfile import LineDict, YamlError, load_file

if TYPE_CHECKING:
    from .route.settings import RouteSettings


class ConfigError(Exception):
    """A setting that cannot be used; the message names file and line."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SoaSettings:
    mname: str | None = None  # None: the zone's first NS
    rname: str | None = None  # None: hostmaster.<zone>
    ttl: int = 3600
    refresh: int = 14400
    retry: int = 3600
    expire: int = 1209600
    minimum: int = 300
    serial: int | None = None  # None: derived from the zone's content


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval: float = 10.0
    timeout: float = 3.0
    rise: int = 2
    fall: int = 3


@dataclass(frozen=True, slots=True)
class TcpSettings:
    idle_timeout: float = 10.0  # RFC 7766 6.2.3 recommends seconds, not minutes
    max_connections: int = 1024
    max_per_client: int = 64
    max_queries: int = 1000  # per connection
    read_deadline: float = 5.0  # for a whole message once its first byte came


@dataclass(frozen=True, slots=True)
class RrlSettings:
    responses_per_second: float = 0.0  # 0: rate limiting off (the default, as in BIND and Knot)
    nxdomains_per_second: float | None = None  # None: responses_per_second
    errors_per_second: float | None = None  # None: responses_per_second
    slip: int = 2  # every slip-th limited response goes out truncated; 0: never
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    table_size: int = 100_000  # buckets kept; the table is cleared when full

    @property
    def enabled(self) -> bool:
        return self.responses_per_second > 0


@dataclass(frozen=True, slots=True)
class Config:
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 5353),)
    zones: Path = Path("zones")
    geodb: tuple[Path, ...] = ()
    ecs: bool = True
    soa: SoaSettings = SoaSettings()
    soa_zones: Mapping[str, SoaSettings] = field(default_factory=dict)
    health: HealthSettings = HealthSettings()
    tcp: TcpSettings = TcpSettings()
    rrl: RrlSettings = RrlSettings()
    workers: int = 0  # 0: one per core
    metrics: ListenAddress | None = ListenAddress("127.0.0.1", 9353)  # None: off
    server_id: str | None = None  # NSID and CHAOS id.server / hostname.bind; None: not answered
    query_log_sample: float = 0.0  # fraction of queries logged, 0 to 1
    user: str | None = None  # drop to this user after binding
    route: RouteSettings | None = None  # the Postfix routing service (`smartdns route`); None: not configured
    source: str | None = None  # the file these came from, for messages
    dnssec_keys: Path = Path("keys")  # DNSSEC key files (BIND format); a zone without keys is unsigned
    dnskey_ttl: int = 3600  # TTL of DNSKEY, CDS, CDNSKEY; a rollover waits it out
    dnssec_nsec3: frozenset[str] = frozenset()  # zones ("example.com.") denied with NSEC3 `1 0 0 -` instead of NSEC

    def soa_for(self, zone: str) -> SoaSettings:
        return self.soa_zones.get(zone.lower().rstrip(".") + ".", self.soa)


def parse_listen(text: str) -> ListenAddress:
    """`HOST:PORT`, `[V6]:PORT`; the host must be an IP address."""
    text = str(text).strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {text!r} is not HOST:PORT (IPv6 as [ADDR]:PORT)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen host {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen port {port!r} is not 0-65535")
    return ListenAddress(host, int(port))


_TOP_KEYS = {"dnssec", "listen", "zones", "geodb", "ecs", "soa", "health", "tcp", "workers", "user", "metrics",
             "server_id", "query_log", "rrl", "route"}
_SOA_KEYS = {"mname", "rname", "ttl", "refresh", "retry", "expire", "minimum", "serial"}


_AT_LEAST_ONE = {"rise", "fall", "max_connections", "max_per_client", "max_queries"}
_POSITIVE = {"interval", "timeout", "idle_timeout", "read_deadline"}


def _number(value: Any, where: str, *, integer: bool, minimum: float = 0, maximum: float | None = None) -> Any:
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or value < minimum or (maximum is not None and value > maximum):
        kind = "an integer" if integer else "a number"
        limit = f" and <= {maximum}" if maximum is not None else ""
        raise ConfigError(f"{where}: must be {kind} >= {minimum}{limit}, got {value!r}")
    return value


def _settings(cls: type, data: Any, path: Path, line: int, base: Any, allowed: set[str] | None = None) -> Any:
    """Build a settings dataclass from a mapping, numbers checked, on top of `base`."""
    if data is None:
        return base
    if not isinstance(data, LineDict):
        raise ConfigError(f"{path}:{line}: {cls.__name__}: must be a mapping")
    names = allowed if allowed is not None else {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        at = f"{path}:{data.line_of(key)}: {key}"
        if key not in names:
            raise ConfigError(f"{at}: unknown key (known: {', '.join(sorted(names))})")
        default = getattr(base, key)
        if key in ("mname", "rname"):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{at}: must be a domain name")
            values[key] = value
        elif key == "serial":
            values[key] = None if value is None else _number(value, at, integer=True, minimum=1, maximum=0xFFFFFFFF)
        else:
            integer = isinstance(default, int)
            minimum = 1 if key in _AT_LEAST_ONE else 0.001 if key in _POSITIVE else 0
            values[key] = _number(value, at, integer=integer, minimum=minimum)
    return replace(base, **values)


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Defaults, then the file (if any), then command-line `overrides` (non-None ones)."""
    config = Config()
    if path is not None:
        config = _from_file(Path(path))
    changes = {k: v for k, v in overrides.items() if v is not None and v != ()}
    if "listen" in changes:
        changes["listen"] = tuple(a if isinstance(a, ListenAddress) else parse_listen(a) for a in changes["listen"])
    if "zones" in changes:
        changes["zones"] = Path(changes["zones"])
    if "geodb" in changes:
        changes["geodb"] = tuple(Path(p) for p in changes["geodb"])
    return replace(config, **changes)


def _from_file(path: Path) -> Config:
    try:
        data = load_file(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except YamlError as exc:
        raise ConfigError(str(exc)) from None
    if data is None:
        return Config(source=str(path))
    if not isinstance(data, LineDict):
        raise ConfigError(f"{path}:1: the config must be a mapping of settings")
    base = path.parent
    where = lambda key: f"{path}:{data.line_of(key)}: {key}"  # noqa: E731
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{where(key)}: unknown setting (known: {', '.join(sorted(_TOP_KEYS))})")
    out: dict[str, Any] = {"source": str(path)}
    if "listen" in data:
        items = data["listen"] if isinstance(data["listen"], list) else [data["listen"]]
        try:
            out["listen"] = tuple(parse_listen(item) for item in items)
        except ValueError as exc:
            raise ConfigError(f"{where('listen')}: {exc}") from None
        if not out["listen"]:
            raise ConfigError(f"{where('listen')}: needs at least one address")
    if "zones" in data:
        if not isinstance(data["zones"], str):
            raise ConfigError(f"{where('zones')}: must be a directory path")
        out["zones"] = base / data["zones"]
    if "geodb" in data:
        items = data["geodb"] or []
        items = items if isinstance(items, list) else [items]
        if not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{where('geodb')}: must be a list of .mmdb paths")
        out["geodb"] = tuple(base / i for i in items)
    if "ecs" in data:
        if not isinstance(data["ecs"], bool):
            raise ConfigError(f"{where('ecs')}: must be true or false")
        out["ecs"] = data["ecs"]
    if "metrics" in data:
        value = data["metrics"]
        if value is False or value is None:
            out["metrics"] = None
        else:
            try:
                out["metrics"] = parse_listen(value)
            except ValueError as exc:
                raise ConfigError(f"{where('metrics')}: {exc} (or false to turn metrics off)") from None
    if "server_id" in data:
        value = data["server_id"]
        if value is not None and (not isinstance(value, str) or not value or len(value.encode()) > 255):
            raise ConfigError(f"{where('server_id')}: must be a name of 1 to 255 bytes")
        out["server_id"] = value
    if "query_log" in data:
        value = data["query_log"]
        if value is None or value is False:
            out["query_log_sample"] = 0.0
        elif not isinstance(value, LineDict) or set(value) - {"sample"}:
            raise ConfigError(f"{where('query_log')}: must be {{sample: FRACTION}}")
        else:
            out["query_log_sample"] = _number(value.get("sample", 0), where("query_log"), integer=False, minimum=0, maximum=1)
    if "user" in data:
        if not isinstance(data["user"], str) or not data["user"]:
            raise ConfigError(f"{where('user')}: must be a user name")
        out["user"] = data["user"]
    if "workers" in data:
        out["workers"] = _number(data["workers"], where("workers"), integer=True, minimum=0)
    if "soa" in data:
        soa = data["soa"] or LineDict()
        if not isinstance(soa, LineDict):
            raise ConfigError(f"{where('soa')}: must be a mapping")
        zones = soa.get("zones") or LineDict()
        common = LineDict((k, v) for k, v in soa.items() if k != "zones")
        common.line, common.key_lines = soa.line, soa.key_lines
        out["soa"] = _settings(SoaSettings, common, path, data.line_of("soa"), SoaSettings(), _SOA_KEYS)
        if not isinstance(zones, LineDict):
            raise ConfigError(f"{path}:{soa.line_of('zones')}: soa zones: must map zone names to SOA settings")
        out["soa_zones"] = {
            str(name).lower().rstrip(".") + ".":
                _settings(SoaSettings, value, path, zones.line_of(name), out["soa"], _SOA_KEYS)
            for name, value in zones.items()
        }
    if "health" in data:
        out["health"] = _settings(HealthSettings, data["health"], path, data.line_of("health"), HealthSettings())
    if "rrl" in data:
        out["rrl"] = _rrl(data["rrl"], path, data.line_of("rrl"))
    if "dnssec" in data:
        value = data["dnssec"] or LineDict()
        nsec3 = value.get("nsec3", []) if isinstance(value, LineDict) else None
        if not isinstance(value, LineDict) or set(value) - {"keys", "dnskey_ttl", "nsec3"} \
                or not isinstance(value.get("keys", ""), str) \
                or not isinstance(nsec3, list) or not all(isinstance(z, str) and z.strip(".") for z in nsec3):
            raise ConfigError(f"{where('dnssec')}: must be {{keys: DIRECTORY, dnskey_ttl: SECONDS, nsec3: [ZONE, ...]}}")
        out["dnssec_nsec3"] = frozenset(z.lower().rstrip(".") + "." for z in nsec3)
        if "keys" in value:
            out["dnssec_keys"] = base / value["keys"]
        if "dnskey_ttl" in value:
            out["dnskey_ttl"] = _number(value["dnskey_ttl"], where("dnssec") + " dnskey_ttl", integer=True,
                                        minimum=0, maximum=2**31 - 1)
    if "tcp" in data:
        out["tcp"] = _settings(TcpSettings, data["tcp"], path, data.line_of("tcp"), TcpSettings())
    if "route" in data:
        from .route.settings import parse_route  # the route package builds on this module

        out["route"] = parse_route(data["route"], path, data.line_of("route"), out.get("health", HealthSettings()))
    return Config(**out)


def _rrl(data: Any, path: Path, line: int) -> RrlSettings:
    if data is None or data is False:
        return RrlSettings()
    if not isinstance(data, LineDict):
        raise ConfigError(f"{path}:{line}: rrl: must be a mapping (or false)")
    values: dict[str, Any] = {}
    for key, value in data.items():
        at = f"{path}:{data.line_of(key)}: rrl {key}"
        if key in ("responses_per_second", "nxdomains_per_second", "errors_per_second"):
            values[key] = None if value is None and key != "responses_per_second" else _number(value, at, integer=False)
        elif key in ("slip", "table_size"):
            slip = key == "slip"
            values[key] = _number(value, at, integer=True, minimum=0 if slip else 1, maximum=10 if slip else None)
        elif key == "ipv4_prefix":
            values[key] = _number(value, at, integer=True, minimum=0, maximum=32)
        elif key == "ipv6_prefix":
            values[key] = _number(value, at, integer=True, minimum=0, maximum=128)
        elif key == "exempt":
            items = value if isinstance(value, list) else [value]
            try:
                values[key] = tuple(str(ipaddress.ip_network(str(i), strict=False)) for i in items)
            except ValueError as exc:
                raise ConfigError(f"{at}: {exc}") from None
        else:
            known = ", ".join(sorted(RrlSettings.__dataclass_fields__))
            raise ConfigError(f"{at}: unknown key (known: {known})")
    return RrlSettings(**values)
