"""What `serve` needs before it binds, checked alike by `check` and `serve`.

A config can parse and still not run: a GeoIP file that is missing or not a
MaxMind DB, a `user` that does not exist, a zones directory that is not there,
SOA settings for a zone no file serves. `check` reports these exactly as `serve`
refuses them, so a green `check` in CI means `serve` starts.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass

from .config import Config
from .geo import Classifier, GeoDatabaseError
from .reload import zone_files


@dataclass(frozen=True)
class Findings:
    errors: tuple[str, ...] = ()  # serve refuses to start
    warnings: tuple[str, ...] = ()  # serve starts, and says so


def preflight(config: Config) -> Findings:
    errors: list[str] = []
    warnings: list[str] = []
    where = f"{config.source}: " if config.source else ""
    for path in config.geodb:
        try:
            Classifier([path], {}).close()
        except GeoDatabaseError as exc:
            errors.append(f"{where}geodb {exc}")
    if config.user:
        try:
            pwd.getpwnam(config.user)
        except KeyError:
            errors.append(f"{where}user {config.user!r}: no such user on this system")
    zones = config.zones
    if not zones.is_dir():
        what = "is not a directory" if zones.exists() else "does not exist"
        errors.append(f"{where}zones directory {zones} {what}")
    else:
        served = {p.name[: -len(".yaml")].lower().rstrip(".") + "." for p in zone_files(zones)}
        if not served:
            others = sorted(p.name for p in zones.iterdir() if p.suffix == ".yml")
            hint = f" ({', '.join(others)}: zone files must end in .yaml)" if others else ""
            warnings.append(f"no zone files (*.yaml) in {zones}: nothing will be answered{hint}")
        for zone, soa in config.soa_zones.items():
            if zone not in served:
                pinned = f" (serial {soa.serial} pinned)" if soa.serial is not None else ""
                errors.append(f"{where}soa zones {zone}{pinned}: no such zone is served "
                              f"(no {zones / (zone.rstrip('.') + '.yaml')})")
    return Findings(tuple(errors), tuple(warnings))
