"""The servers under test, as subprocesses: Kefu (``python -m gateway serve``) and the peer relays
(``websockets``, picows, Node's ``ws``; ``bench/baseline/``).

Each is started with its open-file soft limit raised to the hard limit and, when pinning, bound to
its own core (``sched_setaffinity``, what ``taskset -c`` does) so that the generator's CPU never
lands on the server's core. Its CPU time (utime + stime of every thread, from ``/proc/<pid>/stat``)
and resident memory (``VmRSS`` from ``/proc/<pid>/status``) are read from outside.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
URL_LINE = re.compile(r"^\s*WebSocket:\s*(ws://\S+)")
STARTUP_LINE = re.compile(r"kefu \S+ starting \((codec: [^)]*)\)")
SECRET = "kefu-bench-secret-0123456789abcdef-0123456789"
TENANT = "bench"

# target name -> (kind, store); a "-pure" target is the same gateway with KEFU_PUREPYTHON=1 (every
# native module replaced by its pure-Python twin), for native/pure ratios within one run.
TARGETS = {
    "baseline": ("baseline", None),
    "picows": ("picows", None),
    "node": ("node", None),
    "memory": ("kefu", "memory"),
    "sqlite": ("kefu", "sqlite"),
    "memory-pure": ("kefu", "memory"),
    "sqlite-pure": ("kefu", "sqlite"),
    # the scale-out configuration: PostgreSQL store and Redis bus on this machine (issue 13); with
    # --server-arg=--workers=N its CPU and memory are those of the whole process tree
    "postgres": ("kefu", "postgres"),
}
PG_URL = os.environ.get("KEFU_BENCH_PG", "postgresql://127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEFU_BENCH_REDIS", "redis://127.0.0.1:6379")
# processes whose CPU is the backing services' (PostgreSQL backends, Redis), read beside the server's
BACKING_PROCESSES = ("postgres", "redis-server")
LABELS = {
    "baseline": "baseline (websockets)", "picows": "peer: picows", "node": "peer: node ws",
    "memory": "kefu memory", "sqlite": "kefu sqlite",
    "memory-pure": "kefu memory, pure", "sqlite-pure": "kefu sqlite, pure",
    "postgres": "kefu postgresql+redis",
}


# the peers: relays that are not Kefu, each speaking the same kefu.v1 subset (ratios are taken against them)
PEERS = tuple(t for t, (kind, _) in TARGETS.items() if kind != "kefu")
NODE_DIR = ROOT / "bench" / "baseline" / "node"


class TargetUnavailable(RuntimeError):
    """A target that cannot run on this machine (no ``node``/``npm`` for the Node relay)."""


def node_available() -> bool:
    return shutil.which("node") is not None and (node_installed() or shutil.which("npm") is not None)


def node_installed() -> bool:
    return (NODE_DIR / "node_modules" / "ws").is_dir() and (NODE_DIR / "node_modules" / "@msgpack" / "msgpack").is_dir()


def node_relay_command() -> list[str]:
    """``node relay.mjs``, its dependencies installed first when they are not (``npm install``, once;
    node_modules is not committed), as tests/transport/test_interop.py does for its Node client."""
    node = shutil.which("node")
    if node is None:
        raise TargetUnavailable("node is not installed: the Node ws relay cannot run")
    if not node_installed():
        npm = shutil.which("npm")
        if npm is None:
            raise TargetUnavailable("npm is not installed: cannot install the Node ws relay's dependencies")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not node_installed():
            raise RuntimeError(f"npm install failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}")
    return [node, str(NODE_DIR / "relay.mjs")]


def pure_twin_of(target: str) -> str | None:
    """The pure-Python twin's target of a native Kefu target ("memory" -> "memory-pure")."""
    twin = f"{target}-pure"
    return twin if twin in TARGETS else None


_SERVE_HELP: str | None = None


def kefu_flags() -> str:
    """``kefu serve --help`` (cached): which flags this version of the gateway has."""
    global _SERVE_HELP
    if _SERVE_HELP is None:
        done = subprocess.run([sys.executable, "-m", "gateway", "serve", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        _SERVE_HELP = done.stdout
    return _SERVE_HELP


def relay_args(extra: list[str]) -> list[str]:
    """Flags that make Kefu the plain relay the workloads (and the baseline) speak: conversation
    routing (the bot answering first) off, where the gateway has it and it was not asked for."""
    if "--routing" in kefu_flags() and not any(a.startswith("--routing") and not a.startswith("--routing-file") for a in extra):
        return ["--routing", "off"]
    return []


def _preexec(cpus: set[int] | None):
    def run() -> None:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if cpus:
            os.sched_setaffinity(0, cpus)
        os.setpgrp()  # its own process group: a Ctrl-C of the bench reaches it through stop() only

    return run


@dataclass
class Server:
    target: str
    cpus: set[int] | None = None
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    url: str = ""
    data_dir: str = ""
    log_path: str = ""
    command: list[str] = field(default_factory=list)
    schema: str = ""  # the PostgreSQL schema of a postgres target

    def start(self, timeout: float = 30.0) -> Server:
        kind, store = TARGETS[self.target]
        self.data_dir = tempfile.mkdtemp(prefix=f"kefu-bench-{self.target}-")
        if kind == "kefu":
            backend = ["--store", store]
            if store == "postgres":  # a schema of its own, dropped by cleanup()
                self.schema = f"bench_{os.getpid()}_{int(time.time())}"
                backend = ["--store", PG_URL, "--store-schema", self.schema, "--bus", REDIS_URL]
            self.command = [
                sys.executable, "-m", "gateway", "serve", "--port", "0", "--metrics-port", "-1", *backend,
                "--data-dir", self.data_dir, "--jwt-secret", SECRET, "--rate-per-second", "0",
                "--max-connections-per-user", "100000", *relay_args(self.extra_args), *self.extra_args,
            ]
        elif kind == "picows":
            self.command = [sys.executable, "-m", "bench.baseline.picows_relay", "--port", "0", "--jwt-secret", SECRET]
        elif kind == "node":
            self.command = [*node_relay_command(), "--port", "0", "--jwt-secret", SECRET]
        else:
            self.command = [sys.executable, "-m", "bench.baseline", "--port", "0", "--jwt-secret", SECRET]
        self.log_path = os.path.join(self.data_dir, "server.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            preexec_fn=_preexec(self.cpus), env=self._environment(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.target} server exited with {self.proc.returncode}: {self.log_tail()}")
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    m = URL_LINE.match(line)
                    if m:
                        self.url = m.group(1)
                        return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.target} server printed no WebSocket URL within {timeout} s: {self.log_tail()}")

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KEFU_PUREPYTHON", None)
        if self.target.endswith("-pure"):
            env["KEFU_PUREPYTHON"] = "1"
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the whole process (all threads), in seconds."""
        user, system = self.cpu_times()
        return user + system

    def cpu_times(self) -> tuple[float, float]:
        """(utime, stime) of the whole process tree (every thread; with --workers, every worker),
        in seconds: the system share is the kernel's work for it (its socket system calls), which
        no user-space code avoids."""
        user = system = 0.0
        for pid in self.tree():
            u, s = proc_cpu(pid)
            user, system = user + u, system + s
        return user, system

    def tree(self) -> list[int]:
        """The server's pid and its descendants' (worker processes)."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo += [int(c) for c in f.read().split()]
            except OSError:
                continue
        return found

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.tree():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def build(self) -> str | None:
        """Which twin of each native module the gateway ran (its startup line: "codec: native, …")."""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return None
        found = STARTUP_LINE.search(text)
        return found.group(1) if found else None

    def log_warnings(self) -> list[str]:
        """Warning and error lines the server logged (slow consumers, failures)."""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line or "Traceback" in line][:20]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def cleanup(self) -> None:
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.schema:
            import psycopg
            from psycopg import sql

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
            self.schema = ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()


def proc_cpu(pid: int) -> tuple[float, float]:
    """(utime, stime) of one process, in seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_steal_s() -> float:
    """The machine's steal time so far (all CPUs), in seconds: CPU time the hypervisor gave to
    other guests while this one wanted it. 0 where /proc/stat has none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def backing_cpu_seconds() -> float:
    """CPU seconds (user + system) of every PostgreSQL and Redis process on the machine so far."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith(BACKING_PROCESSES):
            user, system = proc_cpu(int(entry))
            total += user + system
    return total


def gateway_tree() -> dict[str, object]:
    """Which gateway ran: the commit and the files changed in the work tree (read-only git)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "gateway", "native").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_files": changed}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> dict[str, object]:
    import platform

    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
        "kernel": platform.release(), "python": platform.python_version(),
    }
