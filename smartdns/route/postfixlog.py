"""Learning trouble from Postfix's own log, and retrying deferred mail through a relay.

The log file (`route.postfix_log`) is followed like `tail -F`: new lines only, a rotated file
(renamed away, or truncated) is read to its end and the new one from its start. Failures are
what the SMTP client logs about a destination's servers: connections timed out or refused,
4xx replies (and "blocked" 5xx ones, which the reply filter made 4xx), lost or timed-out
conversations, and `status=deferred` deliveries. Each counts for the server's address block and,
when the queue ID ties it to a recipient, for the recipient's domain. The relays' own failures
are not a destination's trouble.

When a destination becomes troubled its deferred messages are retried now (`postqueue -i ID`),
through the relay the next lookup answers: no sooner than `retry_delay` after our last answer for
that domain (Postfix keeps a lookup result for a while) and at most once per message per cool-down.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

from ..metrics import Family
from .trouble import Troubled, block_key, domain_key

if TYPE_CHECKING:
    from .service import RouteService

log = logging.getLogger("smartdns.route")

POLL = 0.5  # seconds between looks at the log file
CHUNK = 65_536  # characters read (and learned from) between two looks at the socketmap
MAX_LINE = 16_384  # a longer "line" is cut (and is no Postfix line we learn from)
MAX_MESSAGES = 20_000  # queue IDs remembered
RETRIES_PER_SECOND = 5.0  # `postqueue -i` runs, at most

# postfix/smtp[123]: or postfix/smartdns-direct-us/smtp[123]: (the service's syslog_name)
LINE = re.compile(r"\b(?P<tag>[\w.-]+(?:/[\w.-]+)*)/(?P<prog>smtp|lmtp|qmgr|cleanup|postsuper)\[(?P<pid>\d+)\]: (?P<msg>.*)$")
QUEUE_ID = re.compile(r"^(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): (?P<rest>.*)$")
HOST = r"(?P<host>[^\s\[\]]*)\[(?P<ip>[0-9A-Fa-f.:]+)\](?::\d+)?"
FAILURES = [
    re.compile(r"^connect to " + HOST + r": (?P<why>.+)$"),
    re.compile(r"^host " + HOST + r" said: (?P<why>4\d\d[ -].*)$"),
    re.compile(r"^host " + HOST + r" refused to talk to me: (?P<why>.*)$"),
    re.compile(r"^(?P<why>conversation with|lost connection with) " + HOST + r".*$"),
]
STATUS = re.compile(r"^to=<(?P<rcpt>[^>]*)>,.* relay=(?P<relay>[^,]+), .*status=(?P<status>\w+)(?: \((?P<why>.*)\))?$")


class LogWatcher:
    def __init__(self, service: RouteService) -> None:
        self.service = service
        self.settings = service.settings
        self.path = self.settings.postfix_log
        self.failed_ips: OrderedDict[str, set[str]] = OrderedDict()  # queue ID -> destination IPs that failed
        # "connect to ..." lines carry no queue ID: they belong to the next status line of the same process
        self.by_process: OrderedDict[str, set[str]] = OrderedDict()
        self.deferred: OrderedDict[str, set[str]] = OrderedDict()  # queue ID -> recipient domains deferred
        self.retried: dict[str, float] = {}  # queue ID -> until when it is not retried again
        self.retry_queue: asyncio.PriorityQueue[tuple[float, str]] = asyncio.PriorityQueue()
        self.lines = 0
        self.learned = 0  # failures counted
        self.retries = {"ok": 0, "failed": 0}
        service.trouble.on_troubled.append(self._troubled)

    # --- following the file ---------------------------------------------------------------------

    async def run(self) -> None:
        retrier = asyncio.ensure_future(self._retrier())
        try:
            await self._follow()
        finally:
            retrier.cancel()

    async def _follow(self) -> None:
        assert self.path is not None
        file: TextIO | None = None
        inode = None
        pending = ""
        last_error = ""
        while True:
            try:
                if file is None:
                    file, inode = self._open(at_end=inode is None)
                    pending = ""
                if file is not None:
                    chunk = file.read(CHUNK)
                    if chunk:
                        pending = self._consume(pending + chunk)
                        await asyncio.sleep(0)  # a busy log must not hold up Postfix's lookups
                        continue  # more may be waiting
                    rotated = self._rotated(file, inode)
                    if rotated:
                        file.close()
                        file, inode = None, -1  # -1: the next file is read from its start
                        continue
            except OSError as exc:
                if str(exc) != last_error:  # once per distinct error, not every poll
                    log.error("route: reading %s: %s (no trouble is learned meanwhile)", self.path, exc)
                    last_error = str(exc)
                if file is not None:
                    file.close()
                file = None
            except Exception:
                log.exception("route: learning from %s", self.path)
            await asyncio.sleep(POLL)

    def _open(self, at_end: bool) -> tuple[TextIO | None, int | None]:
        assert self.path is not None
        try:
            file = open(self.path, encoding="utf-8", errors="replace", newline="\n")
        except FileNotFoundError:
            return None, -1  # not there yet: when it appears, every line of it is news
        inode = os.fstat(file.fileno()).st_ino
        if at_end:
            file.seek(0, os.SEEK_END)  # history is not news: only lines from now on
        log.info("route: following %s%s", self.path, " from its end" if at_end else " (rotated)")
        return file, inode

    def _rotated(self, file: TextIO, inode: int | None) -> bool:
        assert self.path is not None
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away, the new one not there yet: keep reading the old
        return stat.st_ino != inode or stat.st_size < file.tell()

    def _consume(self, text: str) -> str:
        *lines, rest = text.split("\n")
        for line in lines:
            self.lines += 1
            self.learn(line[:MAX_LINE])
        return rest[-MAX_LINE:]

    # --- learning -------------------------------------------------------------------------------

    def learn(self, line: str) -> None:
        match = LINE.search(line)
        if match is None:
            return
        message = match.group("msg")
        queued = QUEUE_ID.match(message)
        qid, rest = (queued.group("qid"), queued.group("rest")) if queued else (None, message)
        if qid is not None and rest == "removed":
            self.deferred.pop(qid, None)
            self.failed_ips.pop(qid, None)
            return
        if match.group("prog") not in ("smtp", "lmtp"):
            return
        via_relay = "/smartdns-relay-" in match.group("tag")
        process = f"{match.group('tag')}[{match.group('pid')}]"
        status = STATUS.match(rest)
        if status is not None and qid is not None:
            earlier = self.by_process.pop(process, None)
            if earlier:
                _remember(self.failed_ips, qid, set()).update(earlier)
            self._status(qid, status, via_relay)
            return
        if via_relay:
            return  # a relay's trouble, not the destination's
        for pattern in FAILURES:
            failure = pattern.match(rest)
            if failure is not None:
                ip = failure.group("ip")
                if self._failure(ip, f"{failure.group('host')}[{ip}]: {failure.group('why')[:120]}"):
                    if qid is not None:
                        _remember(self.failed_ips, qid, set()).add(ip)
                    else:
                        _remember(self.by_process, process, set()).add(ip)
                return

    def _failure(self, ip: str, reason: str) -> bool:
        """Count a failure of the destination server at `ip`; False for a relay (not a destination)."""
        if self._is_relay(ip):
            return False
        key = block_key(ip)
        if key is None:
            return False
        self.learned += 1
        self.service.trouble.failure(key, reason)
        return True

    def _status(self, qid: str, status: re.Match[str], via_relay: bool) -> None:
        domain = status.group("rcpt").rpartition("@")[2].lower()
        relay = status.group("relay")
        state = status.group("status")
        ip = relay[relay.find("[") + 1:relay.find("]")] if "[" in relay else ""
        if state == "deferred":
            _remember(self.deferred, qid, set()).add(domain)
            # relay=none (no host was reached: our own resolver or routing failed) is nobody's trouble
            if not via_relay and domain and ip and (not self._is_relay(ip) or qid in self.failed_ips):
                why = (status.group("why") or "deferred")[:120]
                if ip and not self._is_relay(ip) and not any(w in why for w in ("connect to", "said:", "with ")):
                    self._failure(ip, f"{relay}: {why}")  # a failure only the status line tells of
                self.learned += 1
                self.service.trouble.failure(domain_key(domain), f"to {domain} deferred: {why}")
            return
        if domain and qid in self.failed_ips and not via_relay and state == "sent" and self._is_relay(ip):
            # delivered by the fallback relay after the destination failed: the domain's trouble too
            self.learned += 1
            self.service.trouble.failure(domain_key(domain), f"to {domain}: direct failed, fallback relay {relay}")
        domains = self.deferred.get(qid)
        if domains is not None:
            domains.discard(domain)
            if not domains:
                del self.deferred[qid]

    def _is_relay(self, ip: str) -> bool:
        return ip in self.service.relays.addresses

    # --- retrying deferred mail through the relay ------------------------------------------------

    def _troubled(self, key: str, entry: Troubled) -> None:
        now_mono = time.monotonic()
        for qid, domains in list(self.deferred.items()):
            for domain in domains:
                if not self._matches(key, qid, domain):
                    continue
                if self.retried.get(qid, 0) > time.time():
                    continue
                self.retried[qid] = entry.until
                last = self.service.last_answer.get(domain, 0.0)
                at = max(now_mono, last + self.settings.retry_delay)
                log.info("route: %s is troubled: retrying deferred %s (to %s) in %.0fs through the relay",
                         key, qid, domain, at - now_mono)
                self.retry_queue.put_nowait((at, qid))
                break
        if len(self.retried) > MAX_MESSAGES:
            now = time.time()
            self.retried = {q: t for q, t in self.retried.items() if t > now}

    def _matches(self, key: str, qid: str, domain: str) -> bool:
        if key == domain_key(domain):
            return True
        if any(block_key(ip) == key for ip in self.failed_ips.get(qid, ())):
            return True
        mx = self.service.mx.cached(domain)
        return mx is not None and any(block_key(a) == key for h in mx.primary for a in h.addresses)

    async def _retrier(self) -> None:
        command = ["postqueue"]
        if self.settings.postfix_config_directory is not None:
            command += ["-c", str(self.settings.postfix_config_directory)]
        while True:
            at, qid = await self.retry_queue.get()
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the earliest due comes first; later ones wait behind it
            try:
                process = await asyncio.create_subprocess_exec(*command, "-i", qid, stdout=asyncio.subprocess.DEVNULL,
                                                               stderr=asyncio.subprocess.PIPE)
                _, err = await asyncio.wait_for(process.communicate(), 30)
                ok = process.returncode == 0
            except (TimeoutError, OSError) as exc:
                ok, err = False, str(exc).encode()
            self.retries["ok" if ok else "failed"] += 1
            if ok:
                log.info("route: postqueue -i %s: retried now", qid)
            else:
                log.warning("route: postqueue -i %s failed: %s", qid, err.decode(errors="replace").strip()[:200])
            await asyncio.sleep(1 / RETRIES_PER_SECOND)

    def families(self) -> Iterable[Family]:
        yield Family("counter", "smartdns_route_log_lines", "Postfix log lines read", (), (((), self.lines),))
        yield Family("counter", "smartdns_route_failures_learned", "Delivery failures counted from the log",
                     (), (((), self.learned),))
        yield Family("counter", "smartdns_route_retries", "Deferred messages retried with postqueue -i, by result",
                     ("result",), tuple(((k,), v) for k, v in sorted(self.retries.items())))


def _remember(table: OrderedDict[str, set[str]], qid: str, empty: set[str]) -> set[str]:
    entry = table.get(qid)
    if entry is None:
        if len(table) >= MAX_MESSAGES:
            table.popitem(last=False)
        entry = table[qid] = empty
    return entry
