"""Dropping root after the sockets are bound."""

from __future__ import annotations

import grp
import logging
import os
import pwd

log = logging.getLogger("smartdns")


class PrivilegeError(Exception):
    pass


def drop_privileges(user: str) -> None:
    """Become `user` (and its primary group) for good; only root can."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"no such user {user!r}") from None
    if os.geteuid() != 0:
        if os.geteuid() == entry.pw_uid:
            return
        raise PrivilegeError(f"cannot become {user!r}: not running as root")
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:  # pragma: no cover - setuid failing silently
        raise PrivilegeError("still root after dropping privileges")
    log.info("running as user %s (uid %d, gid %d, group %s)", user, entry.pw_uid, entry.pw_gid,
             grp.getgrgid(entry.pw_gid).gr_name)


def warn_if_root() -> None:
    if os.geteuid() == 0:
        log.warning("running as root: give --user (or user: in the config) to drop privileges after binding")
