"""A private Postfix instance for tests: its own config and queue directories, loopback only.

Started with `postfix -c DIR start`, logging to its own file (maillog_file), taking mail with
`sendmail -C DIR`, and stopped with `postfix -c DIR stop`. Meant to run inside a network
namespace that has only loopback (see tests/route_e2e.py), since it resolves MX records with
the system resolver.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    def __init__(self, directory: Path, main_extra: str = "", master_extra: str = "") -> None:
        self.dir = directory
        self.config = directory / "etc"
        self.queue = directory / "queue"
        self.data = directory / "data"
        self.log = directory / "mail.log"
        for path in (self.config, self.queue, self.data):
            path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "postfix", str(self.data)], check=True)
        for parent in directory.resolve().parents:  # Postfix's daemons (user postfix) must reach their files
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)  # search only, no listing
        (self.config / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
mail_owner = postfix
setgid_group = postdrop
myhostname = sender.home.test
mydomain = home.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtp_bind_address = 127.0.0.1
maillog_file = {self.log}
maillog_file_prefixes = {directory}
biff = no
smtputf8_enable = no
smtp_connect_timeout = 2s
smtp_helo_timeout = 4s
queue_run_delay = 300s
minimal_backoff_time = 300s
maximal_backoff_time = 600s
smtp_tls_loglevel = 1
{main_extra}
""")
        (self.config / "master.cf").write_text(MASTER_CF + master_extra)

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["postfix", "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=60, check=check)

    def start(self) -> None:
        started = self.postfix("start", check=False)
        if started.returncode != 0:
            raise RuntimeError(f"postfix start failed: {started.stdout}{started.stderr}{self.lines_text()}")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.log.exists() and "daemon started" in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError("postfix did not start:\n" + self.lines_text())

    def stop(self) -> None:
        self.postfix("stop", check=False)

    def send(self, recipient: str, subject: str = "test", sender: str = "someone@home.test") -> None:
        message = f"From: {sender}\nTo: {recipient}\nSubject: {subject}\n\nhello from the route tests\n"
        subprocess.run(["sendmail", "-C", str(self.config), "-f", sender, recipient], input=message, text=True,
                       check=True, timeout=30)

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.config), "-f"], check=True, timeout=30)

    def lines_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines_for(self, recipient: str) -> list[str]:
        """Every log line of the messages to this recipient, in order: those with their queue ID, and
        the SMTP client's lines without one ("connect to ...") that its process logged for them."""
        lines = self.lines_text().splitlines()
        ids = {m.group(1) for line in lines
               if (m := re.search(r" ([0-9A-Za-z]{10,}|[0-9A-F]{6,}): to=<" + re.escape(recipient) + ">", line))}
        out: list[str] = []
        loose: dict[str, list[str]] = {}  # process -> its lines without a queue ID since its last status line
        for line in lines:
            process = re.search(r" (\S+/smtp\[\d+\]): ", line)
            if any(f" {qid}: " in line for qid in ids):
                if process and "status=" in line:
                    out.extend(loose.pop(process.group(1), []))
                out.append(line)
            elif process and not re.search(r"\]: [0-9A-Za-z]{6,}: ", line):
                loose.setdefault(process.group(1), []).append(line)
            if process and "status=" in line:
                loose.pop(process.group(1), None)
        return out

    def wait_status(self, recipient: str, status: str, timeout: float = 60.0) -> str:
        """The first `status=...` line for the recipient; fails after `timeout` seconds."""
        pattern = re.compile(r"to=<" + re.escape(recipient) + r">.*status=" + status)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines_text().splitlines():
                if pattern.search(line):
                    return line
            time.sleep(0.25)
        raise AssertionError(f"no status={status} for {recipient} within {timeout}s; log:\n" + self.lines_text()[-6000:])
