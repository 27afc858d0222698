"""The machinery of tests/test_hostile_service.py: a `scinsearch serve` subprocess watched for traces
(an audit hook, a fake `gs`, private folders, its peak memory) and the checks made around each batch
of hostile requests."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import hostile_corpus as corpus
from hostile_http import Answer, answers_ready, free_port, while_probing_health
from scinsearch.service.settings import ServiceSettings

HEALTH_LIMIT_SECONDS = 0.2
FAKE_GS = '#!/bin/sh\necho "gs $*" >> "$GS_RECORD"\nexit 1\n'
# Run the CLI with an audit hook reporting, on the pipe AUDIT_FD, whatever could leave a trace on disk.
SERVE_WITH_AUDIT = """
import os, sys, time
fd = int(os.environ["AUDIT_FD"])
writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC | getattr(os, "O_TMPFILE", 0)
events = {"os.mkdir", "os.rename", "os.link", "os.symlink", "os.truncate", "os.remove", "os.rmdir",
          "shutil.copyfile", "shutil.copytree", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp",
          "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty"}
def hook(event, args):
    if event == "open" and not isinstance(args[0], int) and args[2] is not None and args[2] & writing:
        pass
    elif event not in events:
        return
    os.write(fd, f"{time.time():.3f} {event} {str(args)[:300]}\\n".encode("utf-8", "replace"))
sys.addaudithook(hook)
from scinsearch.cli import main
sys.exit(main())
"""


class Server:
    """The `scinsearch serve` subprocess, its folders and everything it printed."""

    def __init__(self, root: Path, arguments: list[str], env: dict[str, str], settings: ServiceSettings):
        """`arguments` follow `scinsearch serve` (the port is added); `env` is added to the environment;
        `settings` are the ServiceSettings those arguments amount to (for the memory bound)."""
        self.root = root
        self.folders = {name: root / name for name in ("cwd", "home", "tmpdir", "bin")}
        for folder in self.folders.values():
            folder.mkdir()
        self.gs_record = root / "gs-called"
        gs = self.folders["bin"] / "gs"
        gs.write_text(FAKE_GS)
        gs.chmod(0o755)
        self.port = free_port()
        self.env = {
            **os.environ,
            "PATH": f"{self.folders['bin']}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.folders["home"]),
            "TMPDIR": str(self.folders["tmpdir"]),
            "GS_RECORD": str(self.gs_record),
            "HF_HUB_OFFLINE": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # lazily imported modules would write .pyc files
            **env,
        }
        self.command = [
            sys.executable,
            "-c",
            SERVE_WITH_AUDIT,
            "serve",
            *arguments,
            *("--port", str(self.port)),
        ]
        self.settings = settings
        self.store = Path(arguments[arguments.index("--qdrant-path") + 1])
        self.output = bytearray()
        self.audit: list[tuple[float, str]] = []  # (time, event) from the audit hook
        self.uploaded: list[bytes] = []  # every payload sent during the module
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        audit_read, audit_write = os.pipe()
        self.process = subprocess.Popen(
            self.command,
            cwd=self.folders["cwd"],
            env={**self.env, "AUDIT_FD": str(audit_write)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(audit_write,),
        )
        os.close(audit_write)
        threading.Thread(target=self.collect, daemon=True).start()
        threading.Thread(target=self.collect_audit, args=(audit_read,), daemon=True).start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited: {bytes(self.output[-3000:]).decode(errors='replace')}"
            if answers_ready(self.port):
                return
            time.sleep(0.05)
        raise AssertionError("serve did not become ready")

    def collect(self) -> None:
        for line in self.process.stdout:
            self.output += line

    def collect_audit(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                when, _, event = line.decode("utf-8", "replace").partition(" ")
                self.audit.append((float(when), event.strip()))

    def traces_since(self, since: float) -> list[str]:
        """What the audit hook saw since `since` (epoch seconds): files written, programs started."""
        time.sleep(0.2)  # let the pipe catch up
        return [event for when, event in list(self.audit) if when >= since]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def memory(self, field: str, pid: int | None = None) -> int:
        """VmRSS (now) or VmHWM (peak since the last reset) of the server (or process `pid`), in bytes."""
        for line in Path(f"/proc/{pid or self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    def reset_peak(self) -> int:
        """Start measuring the peak afresh (Linux clear_refs 5); returns the memory in use now."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self.memory("VmRSS")

    def decoder_pid(self, wait: float = 60.0, other_than: int | None = None) -> int:
        """The photo decoder process (the server's child started by multiprocessing), once it runs;
        `other_than`: the one that replaced that decoder (a stopped one stays listed while it is reaped)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            for child in children:
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes() and int(child) != other_than:
                        return int(child)
            time.sleep(0.1)
        raise AssertionError("no photo decoder process" + (f" other than {other_than}" if other_than else ""))

    def private_folders(self) -> list[Path]:
        return [*self.folders.values(), self.root, self.store]


def files_under(folders: list[Path]) -> dict[str, tuple[int, int]]:
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.name != ".lock":
                stat = path.stat()
                found[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def names_under(root: Path, skip: Path | None = None) -> set[str]:
    """The files under `root`, except under the folder `skip` (not entered: the walk is what costs)."""
    found = set()
    for directory, subdirectories, names in os.walk(root, onerror=lambda error: None):
        if skip is not None:
            subdirectories[:] = [d for d in subdirectories if os.path.join(directory, d) != str(skip)]
        found.update(os.path.join(directory, name) for name in names)
    return found


def holding_any(paths: set[str], samples: list[bytes], largest: int) -> list[str]:
    """The files among `paths`, up to `largest` bytes (a copy of an upload is no bigger than the
    largest upload), whose first MB holds any of the samples. One `in` per sample: ~8x faster than one
    regular expression alternating all of them (the sweep reads every new file of a shared /tmp)."""
    hits = []
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            if os.path.isfile(path) and not os.path.islink(path) and 0 < os.path.getsize(path) <= largest:
                with open(path, "rb") as handle:
                    data = handle.read(2**20)
                found = next((sample for sample in samples if sample in data), None)
                if found is not None:
                    hits.append(f"{path} holds {found[:24]!r}")
    return hits


@functools.lru_cache(maxsize=1)
def generic_bytes() -> bytes:
    """Other pictures in every format: what a sample shares with them (JPEG's standard Huffman tables,
    a format's fixed header) is not distinctive of our uploads."""
    files = [*corpus.every_writable_format(corpus.photo((40, 30), seed=99)).values()]
    files += [corpus.encoded(corpus.photo((50, 20), seed=98), name) for name in ("JPEG", "PNG", "WEBP")]
    return b"\0".join(files)


def samples_of(payloads: list[bytes]) -> list[bytes]:
    """Distinctive 48-byte pieces of each payload (start, middle, end) to look for on disk."""
    pieces = set()
    for data in payloads:
        if len(data) >= 48:
            middle = len(data) // 2
            pieces |= {data[:48], data[middle : middle + 48], data[-48:]}
    generic = generic_bytes()
    return [p for p in pieces if len(set(p)) > 8 and p not in generic]  # runs of a few bytes match anything


class Watch:
    """Around a batch of hostile requests: health latency, answers, files, gs, peak memory."""

    def __init__(self, server: Server, health_limit: float = HEALTH_LIMIT_SECONDS):
        self.server = server
        self.health_limit = health_limit
        self.payloads: list[bytes] = []
        self.problems: list[str] = []
        self.health: list[float] = []

    def request(self, name: str, payload: bytes, expected: set[int], call) -> Answer:
        self.payloads.append(payload)
        self.server.uploaded.append(payload)
        answer, timings = while_probing_health(self.server.port, call)
        self.health += timings
        if answer.status not in expected:
            self.problems.append(f"{name}: {answer.status} {answer.body[:200]!r} (expected {sorted(expected)})")
        if max(timings) >= self.health_limit:
            self.problems.append(f"{name}: /health took {max(timings) * 1000:.0f} ms while it was in flight")
        return answer

    @contextlib.contextmanager
    def checks(self, memory_bound: int):
        server = self.server
        since = time.time()
        before = files_under(server.private_folders())
        in_use = server.reset_peak()
        yield self
        grown = server.memory("VmHWM") - in_use
        assert self.problems == [], "\n".join(self.problems)
        assert grown < memory_bound, f"the server's peak memory grew by {grown / 2**20:.0f} MiB"
        assert server.traces_since(since) == []
        assert files_under(server.private_folders()) == before, "a file appeared or changed"
        assert not server.gs_record.exists(), server.gs_record.read_text()
        assert server.process.poll() is None, "the server died"


def serve_a_tiny_collection(
    tmp_path_factory, model_dir: Path, arguments: list[str], env: dict[str, str], settings: ServiceSettings
) -> Server:
    """Embed a small synthetic release with the tiny model and start `scinsearch serve` over it, with
    `arguments` after the store and model options."""
    from scinsearch import testing
    from scinsearch.cli import main

    release = testing.write_release(tmp_path_factory.mktemp("hostile-scin") / "scin", cases=6, broken_files=False)
    store = tmp_path_factory.mktemp("hostile-store")
    embedded = main(
        [
            *("embed", "--scin-dir", str(release), "--qdrant-path", str(store), "--collection", "hostile"),
            *("--model", str(model_dir), "--device", "cpu", "--workers", "0", "--quiet"),
        ]
    )
    assert embedded == 0
    store_and_model = ("--qdrant-path", str(store), "--collection", "hostile", "--model", str(model_dir))
    running = Server(
        tmp_path_factory.mktemp("hostile-serve"), [*store_and_model, "--device", "cpu", *arguments], env, settings
    )
    running.start()
    return running
