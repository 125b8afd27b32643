"""Run dnsperf against running servers, measure their CPU, print and save the results.

Called by bench/run.sh once the servers are up and verified; it starts nothing but dnsperf.
For each round, each load mode and each server (interleaved, so drift hits all alike):

- two dnsperf processes at once, pinned to the client core, one sending from the "domestic"
  source address and one from the "overseas" one, each half of the load, each with its own
  query file (and, for the ECS variants, its own EDNS Client Subnet option); the query files
  are written anew for every round and load mode (bench/queries.py, new seeds), the same for
  every server then, so the random nonexistent names of a run are new to every server;
- the server's CPU time over the run, from /proc: the sum over the server process, all its
  threads and all its descendant processes (workers) of the time they spent on a CPU
  (/proc/PID/task/TID/schedstat, nanoseconds; utime+stime ticks where that is missing).

Load modes: a fixed total rate (dnsperf -Q, --rate, repeatable) below every server's
capacity measures CPU per query directly at the same load for all; "max load" sends as fast as
the outstanding-query window (-q) lets it, so qps shows capacity (a saturated server runs at
~100% CPU and its CPU per query is then ~1/qps) unless dnsperf's one core is the limit, which
the client CPU column shows. CPU per query falls as load rises (more datagrams per wake-up),
so ratios are only taken between runs at the same load.

Medians over the rounds go to stdout and, with the machine description, to --results.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from queries import write_queries  # bench/queries.py, beside this file

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Ratios checked against issue 4's targets: (label, numerator server, denominator server,
# metric, target, "max" if the ratio must stay at or below the target else "min").
RATIOS = [
    ("smartdns CPU/query / floor CPU/query", "smartdns", "floor", "cpu_us", 1.5, "max"),
    ("smartdns qps per core / pdns qps per core", "smartdns", "pdns", "qps_core", 2.0, "min"),
    ("smartdns ECS CPU/query / floor CPU/query", "smartdns-ecs", "floor", "cpu_us", 2.0, "max"),
    # issue 5: counting for the metrics must cost under 10%
    ("smartdns CPU/query / smartdns-nometrics CPU/query", "smartdns", "smartdns-nometrics", "cpu_us", 1.1, "max"),
]


@dataclass
class Server:
    name: str
    addr: str
    port: int
    pid: int
    ecs: bool = False
    note: str = ""


@dataclass
class Run:
    """One dnsperf run (both processes) against one server."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    run_time: float = 0.0
    latency_sum: float = 0.0  # average latency x completed, summed over the processes
    server_cpu: float = 0.0  # seconds
    client_cpu: float = 0.0  # seconds, both dnsperf processes
    wall: float = 0.0  # seconds from starting dnsperf to both having exited
    machine_cpu: float = 0.0  # seconds of task time (user, nice, system) on all CPUs
    rcodes: dict[str, int] = field(default_factory=dict)

    @property
    def qps(self) -> float:
        return self.completed / self.run_time if self.run_time else 0.0

    @property
    def cpu_pct(self) -> float:
        return 100.0 * self.server_cpu / self.run_time if self.run_time else 0.0

    @property
    def cpu_us(self) -> float:
        return 1e6 * self.server_cpu / self.completed if self.completed else float("nan")

    @property
    def qps_core(self) -> float:
        """Answered queries per second per fully used core: 1 / CPU per query."""
        return self.completed / self.server_cpu if self.server_cpu else float("nan")

    @property
    def other_pct(self) -> float:
        """Everything else that ran meanwhile (other processes, e.g. a test suite), % of a core."""
        other = self.machine_cpu - self.server_cpu - self.client_cpu
        return max(0.0, 100.0 * other / self.wall) if self.wall else 0.0

    @property
    def latency_ms(self) -> float:
        return 1e3 * self.latency_sum / self.completed if self.completed else float("nan")

    @property
    def client_pct(self) -> float:
        return 100.0 * self.client_cpu / self.wall if self.wall else 0.0


# --- CPU time from /proc -------------------------------------------------------------------


def _stat_fields(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on (field 3)


def process_tree(root: int) -> list[int]:
    """root and all its descendants, from the ppid field of every /proc/PID/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(entry)[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo and len(tree) < 10_000:  # bounded, whatever /proc says
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """CPU time used so far by root's process tree (all threads, all descendants)."""
    total = 0.0
    for pid in process_tree(root):
        try:
            ns = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    ns += int(f.read().split()[0])
            total += ns / 1e9
        except (OSError, ValueError, IndexError):
            try:  # no schedstat (kernel without it): utime + stime, in clock ticks
                fields = _stat_fields(pid)
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            except (OSError, ValueError, IndexError):
                pass  # exited meanwhile
    return total


def machine_task_seconds() -> float:
    """user + nice + system time of all CPUs so far (/proc/stat; interrupts not included)."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()  # "cpu  user nice system idle iowait irq softirq ..."
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / CLK_TCK


# --- dnsperf ---------------------------------------------------------------------------------


def parse_dnsperf(text: str) -> dict:
    def num(label: str) -> float:
        m = re.search(rf"{label}:\s+([0-9.]+)", text)
        if not m:
            raise ValueError(f"dnsperf output has no {label!r}:\n{text}")
        return float(m.group(1))

    rcodes = {}
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        for code, count in re.findall(r"([A-Z]+) (\d+)", m.group(1)):
            rcodes[code] = int(count)
    return {
        "sent": int(num("Queries sent")),
        "completed": int(num("Queries completed")),
        "lost": int(num("Queries lost")),
        "run_time": num(r"Run time \(s\)"),
        "latency": num(r"Average Latency \(s\)"),
        "rcodes": rcodes,
    }


def query_files(args: argparse.Namespace, number: int) -> tuple[str, str]:
    """The domestic and the overseas query file of run `number` (0: the warm-up)."""
    if args.reuse_queries:
        number = 1  # one pair for every run: the nonexistent names get cached by the warm-up
    paths = (os.path.join(args.workdir, f"queries-{number}-domestic.txt"),
             os.path.join(args.workdir, f"queries-{number}-overseas.txt"))
    for i, path in enumerate(paths):
        write_queries(path, args.queries_lines, seed=1000 + 2 * number + i)
    return paths


def run_once(server: Server, args: argparse.Namespace, duration: float, rate: int,
             files: tuple[str, str]) -> Run:
    """Both dnsperf processes against one server for `duration` seconds; server CPU around it."""
    legs = [(args.src_domestic, files[0], args.ecs_domestic),
            (args.src_overseas, files[1], args.ecs_overseas)]
    cmds = []
    for src, queries, ecs in legs:
        cmd = ["taskset", "-c", args.client_cpus, "dnsperf", "-s", server.addr, "-p", str(server.port),
               "-a", src, "-d", queries, "-l", str(duration), "-q", str(args.outstanding),
               "-t", str(args.timeout)]
        if rate:
            cmd += ["-Q", str(max(1, rate // 2))]
        if server.ecs:
            cmd += ["-E", f"8:{ecs}"]
        cmds.append(cmd)

    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = cpu_seconds(server.pid)
    machine0 = machine_task_seconds()
    wall0 = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=duration + args.timeout + 30)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit(f"dnsperf did not finish in time: {' '.join(cmds[0])}") from None
    wall = time.monotonic() - wall0
    machine1 = machine_task_seconds()
    cpu1 = cpu_seconds(server.pid)
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)

    run = Run()
    for p, cmd, out in zip(procs, cmds, outputs):
        if p.returncode != 0:
            raise SystemExit(f"dnsperf failed ({p.returncode}): {' '.join(cmd)}\n{out}")
        d = parse_dnsperf(out)
        run.sent += d["sent"]
        run.completed += d["completed"]
        run.lost += d["lost"]
        run.run_time = max(run.run_time, d["run_time"])
        run.latency_sum += d["latency"] * d["completed"]
        for code, n in d["rcodes"].items():
            run.rcodes[code] = run.rcodes.get(code, 0) + n
    run.server_cpu = cpu1 - cpu0
    run.machine_cpu = machine1 - machine0
    run.wall = wall
    run.client_cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return run


# --- report ----------------------------------------------------------------------------------

COLUMNS = [  # header, attribute, format
    ("qps", "qps", "{:,.0f}"),
    ("server CPU %", "cpu_pct", "{:.0f}"),
    ("CPU µs/query", "cpu_us", "{:.1f}"),
    ("qps per core", "qps_core", "{:,.0f}"),
    ("avg latency ms", "latency_ms", "{:.2f}"),
    ("lost", "lost", "{:,.0f}"),
    ("client CPU %", "client_pct", "{:.0f}"),
    ("other CPU %", "other_pct", "{:.0f}"),
]


def median_of(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def mode_label(rate: int) -> str:
    """A load mode is the total rate offered, 0 meaning as fast as dnsperf goes."""
    return f"fixed rate {rate:,} qps" if rate else "max load"


def render(results: dict, servers: list[Server], args: argparse.Namespace) -> tuple[str, list[str]]:
    """Markdown tables; also the list of warnings about runs that did not measure what they should."""
    out, warnings = [], []
    for mode in args.modes:
        out.append(f"### {mode_label(mode)} (median of {args.rounds} rounds of {args.duration} s)\n")
        out.append("| server | " + " | ".join(c[0] for c in COLUMNS) + " |")
        out.append("|---|" + "---:|" * len(COLUMNS))
        for s in servers:
            runs = results[(mode, s.name)]
            cells = [fmt.format(median_of(runs, attr)) for _, attr, fmt in COLUMNS]
            out.append(f"| {s.name} | " + " | ".join(cells) + " |")
            qps, lost, sent = median_of(runs, "qps"), median_of(runs, "lost"), median_of(runs, "sent")
            if mode and qps < 0.97 * mode:
                warnings.append(f"{s.name} at {mode_label(mode)}: answered only {qps:,.0f} qps, "
                                "so it was overloaded and its CPU/query is 1/capacity; lower RATE")
            if sent and lost > 0.001 * sent:
                warnings.append(f"{s.name} at {mode_label(mode)}: lost {lost:,.0f} of {sent:,.0f} queries")
            if median_of(runs, "other_pct") > 15:
                warnings.append(f"{s.name} at {mode_label(mode)}: other processes used "
                                f"{median_of(runs, 'other_pct'):.0f}% of a core meanwhile, so its numbers are noisy")
            if not mode and median_of(runs, "client_pct") > 90:
                warnings.append(f"{s.name} at max load: dnsperf used {median_of(runs, 'client_pct'):.0f}% of "
                                "its core, so qps may be the client's limit, not the server's")
        out.append("")

    names = {s.name for s in servers}
    out.append("### Ratios against issue 4's targets\n")
    out.append("| ratio | target | " + " | ".join(mode_label(m) for m in args.modes) + " |")
    out.append("|---|---|" + "---:|" * len(args.modes))
    for label, num, den, attr, target, kind in RATIOS:
        if num not in names or den not in names:
            continue
        cells = []
        for mode in args.modes:
            ratio = median_of(results[(mode, num)], attr) / median_of(results[(mode, den)], attr)
            ok = ratio <= target if kind == "max" else ratio >= target
            cells.append(f"{ratio:.2f} {'PASS' if ok else 'FAIL'}")
        sign = "≤" if kind == "max" else "≥"
        out.append(f"| {label} | {sign} {target} | " + " | ".join(cells) + " |")
    if "smartdns-w2" in names and "smartdns" in names and 0 in args.modes:
        r = median_of(results[(0, "smartdns-w2")], "qps") / median_of(results[(0, "smartdns")], "qps")
        out.append("| smartdns --workers 2 qps / --workers 1 qps (dnsperf shares a core) | (information) | "
                   + " | ".join("" if m else f"{r:.2f}" for m in args.modes) + " |")
    out.append("")
    out.append("CPU/query is the server's CPU time (all threads and worker processes) over the run divided "
               "by the answered queries; qps per core = 1 / CPU per query. The fixed-rate runs measure CPU "
               "per query at equal load for all servers; the max-load runs show capacity.")
    return "\n".join(out), warnings


def command_output(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_description(args: argparse.Namespace) -> list[str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    pdns = re.search(r"PowerDNS Authoritative Server (\S+)", command_output(["pdns_server", "--version"]))
    dnsperf = re.search(r"Version (\S+)", command_output(["dnsperf", "-h"]))
    commit = command_output(["git", "-C", args.repo, "describe", "--always", "--dirty"])
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- CPU: {model}; nproc {os.cpu_count()}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- PowerDNS Authoritative {pdns.group(1) if pdns else '?'} (geoip backend), "
        f"dnsperf {dnsperf.group(1) if dnsperf else '?'}",
        f"- smartdns: git {commit or '?'}",
    ]


def setup_description(args: argparse.Namespace, servers: list[Server]) -> list[str]:
    lines = [
        f"- servers pinned to CPU {args.server_cpus}; two dnsperf processes (one from {args.src_domestic}, "
        f"classified CN, one from {args.src_overseas}, classified US) pinned to CPU {args.client_cpus}, "
        f"each sending half the load with {args.outstanding} queries outstanding at most",
        "- query mix: 45% `example.com MX`, 45% `mx.example.com A`, 10% random nonexistent names (NXDOMAIN); "
        f"query files of {args.queries_lines:,} lines, "
        + ("the same for every run (so the nonexistent names repeat and can be cached)"
           if args.reuse_queries else
           "written anew (new random names) for every round and load mode")
        + "; dnsperf loops over a file when a run needs more",
        f"- ECS variants carry client subnet {args.ecs_domestic_prefix} (CN) or {args.ecs_overseas_prefix} (US) on every query",
        f"- {args.rounds} rounds, each running every server in turn for {args.duration} s per load mode"
        + (f" after a {args.warmup} s warm-up" if args.warmup else ""),
    ]
    for s in servers:
        if s.note:
            lines.append(f"- {s.name}: {s.note}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", default=[], required=True,
                        help="NAME=ADDR:PORT:PID, in the order to run and report; repeatable")
    parser.add_argument("--ecs", action="append", default=[], metavar="NAME",
                        help="the server NAME is queried with ECS on every query")
    parser.add_argument("--note", action="append", default=[], metavar="NAME=TEXT",
                        help="a note on the server NAME for the report")
    parser.add_argument("--src-domestic", required=True)
    parser.add_argument("--src-overseas", required=True)
    parser.add_argument("--workdir", required=True, help="where the query files are written")
    parser.add_argument("--queries-lines", type=int, default=100_000, help="lines per query file")
    parser.add_argument("--reuse-queries", action="store_true",
                        help="one pair of query files for all runs (repeated nonexistent names)")
    parser.add_argument("--ecs-domestic", required=True, help="ECS option value, hex")
    parser.add_argument("--ecs-overseas", required=True, help="ECS option value, hex")
    parser.add_argument("--ecs-domestic-prefix", default="")
    parser.add_argument("--ecs-overseas-prefix", default="")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rate", type=int, action="append", default=[],
                        help="total qps of a fixed-rate mode; repeatable (default 20000); 0: none")
    parser.add_argument("--no-max", action="store_true", help="skip the max-load mode")
    parser.add_argument("--outstanding", type=int, default=100)
    parser.add_argument("--timeout", type=int, default=2)
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    parser.add_argument("--results", help="write the Markdown report here")
    parser.add_argument("--repo", default=".")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 50 and 1 <= args.duration <= 300 and 0 <= args.warmup <= 60):
        parser.error("rounds 1-50, duration 1-300 s, warmup 0-60 s")
    rates = args.rate if args.rate else [20000]
    if any(r < 0 or r > 1_000_000 for r in rates):
        parser.error("--rate must be between 0 and 1,000,000")
    args.modes = sorted({r for r in rates if r}) + ([] if args.no_max else [0])
    if not args.modes:
        parser.error("nothing to run: RATE=0 and no max-load mode")

    notes = dict(n.split("=", 1) for n in args.note)
    servers = []
    for spec in args.server:
        name, _, rest = spec.partition("=")
        addr, port, pid = rest.split(":")
        servers.append(Server(name, addr, int(port), int(pid), name in args.ecs, notes.get(name, "")))

    total = args.rounds * len(args.modes) * len(servers) * (args.duration + args.pause)
    print(f"measuring {len(servers)} servers x {len(args.modes)} load modes x {args.rounds} rounds "
          f"x {args.duration} s: about {total / 60:.1f} min", flush=True)
    if args.warmup:
        files = query_files(args, 0)
        for s in servers:  # fill caches, page in code; not measured
            run_once(s, args, args.warmup, args.modes[0], files)

    results: dict[tuple[str, str], list[Run]] = {}
    for rnd in range(1, args.rounds + 1):
        for m, mode in enumerate(args.modes):
            files = query_files(args, 1 + (rnd - 1) * len(args.modes) + m)
            for s in servers:
                time.sleep(args.pause)  # let queues drain between runs
                run = run_once(s, args, args.duration, mode, files)
                results.setdefault((mode, s.name), []).append(run)
                print(f"round {rnd} {mode_label(mode):22} {s.name:13} qps {run.qps:9,.0f}  cpu {run.cpu_pct:4.0f}%  "
                      f"{run.cpu_us:6.1f} us/q  lat {run.latency_ms:6.2f} ms  lost {run.lost:,}  "
                      f"client {run.client_pct:3.0f}%  other {run.other_pct:3.0f}%  rcodes {run.rcodes}", flush=True)

    tables, warnings = render(results, servers, args)
    print()
    print(tables)
    for w in warnings:
        print(f"WARNING: {w}")
    if args.results:
        doc = ["# smartdns benchmark results", "",
               "Written by `bench/run.sh` (do not edit by hand: run it again). Issue 4 has the targets.", "",
               "## Machine", "", *machine_description(args), "",
               "## Setup", "", *setup_description(args, servers), "",
               "## Results", "", tables, ""]
        if warnings:
            doc += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
        with open(args.results, "w", encoding="utf-8") as f:
            f.write("\n".join(doc))
        print(f"\nwrote {args.results}")


if __name__ == "__main__":
    main()
