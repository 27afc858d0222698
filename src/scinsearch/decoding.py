"""Decode workers that a bad file cannot stop: a file that crashes or hangs its worker is found, named
and left out, and everything else is decoded.

Why not a plain `DataLoader`: when one of its workers dies (a segfault in a decoder, the kernel's
out-of-memory killer) it raises "DataLoader worker (pid N) is killed by signal", naming no file, and a
rerun dies at the same place. Here the main process knows what each worker holds: every worker has
its own task and result pipes (a dying worker cannot corrupt a queue the others share), and it notes
in a shared journal which file it is decoding and since when. When a worker dies, or overruns
`timeout` on one file (it is then killed), the file it was on is decoded again alone in a fresh
process (a probe). If the probe crashes or hangs too, that file is the culprit: it is reported as a
failure of its chunk (`DecodedChunk.crashed`) and left out. If not (the out-of-memory killer picked a
bystander), the chunk is simply done again. Either way a new worker takes the dead one's place and
its unfinished chunks. Results travel as shared-memory tensors, as in a `DataLoader`.

With `workers=0` everything is decoded in the calling process, unguarded (used by `scinsearch check`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import signal
import time
from collections.abc import Iterator, Sequence
from multiprocessing import connection
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.multiprocessing  # registers the shared-memory pickling of tensors used on the result pipes
from torch.utils.data import Dataset as TorchDataset

from scinsearch.errors import ScinSearchError
from scinsearch.images import ImageError, decode_memory_bound
from scinsearch.photo_worker import limit_address_space
from scinsearch.pixel_cache import PixelCache
from scinsearch.preprocessing import Preprocessor, collate

if TYPE_CHECKING:  # annotations only: decoding needs no pandas
    from scinsearch.dataset import ImageRecord

DECODE_NICENESS = 19  # decode workers on the CPU: run when the model does not need the core
PREFETCH = 2  # chunks handed to each worker ahead of time (bounds memory in flight)
DECODE_TIMEOUT = 300.0  # seconds one file may take to decode before its worker is killed (SCIN's: ~0.03 s)
MAX_ATTEMPTS = 3  # a chunk whose worker died this often, with no single file to blame, is given up
POLL_SECONDS = 0.25  # how often the main process looks for dead or overrunning workers while it waits
PROBE_START_SECONDS = 120.0  # the most a lone retry's fresh process may take to start, on top of the deadline
# A decode worker's address space is capped at what it maps when it starts plus the most one image may
# need to decode (`images.decode_memory_bound`) and this much for its chunk of preprocessed images.
WORKER_HEADROOM_BYTES = 512 * 2**20
PARENT_CHECK_SECONDS = 1.0  # how often an idle worker checks that the main process is still there


RECORDS_MODULE = "scinsearch.dataset"  # where `ImageRecord`, the records the workers are sent, is defined


class DecodeImages(TorchDataset):
    """Runs in decode workers: decode one file and preprocess it (or load its pixels from the cache),
    or return the reason it failed. Items: (index, arrays or None, reason or None, came from the cache)."""

    def __init__(self, records: Sequence[ImageRecord], preprocessor: Preprocessor, cache: PixelCache | None = None):
        self.records = records
        self.preprocessor = preprocessor
        self.cache = cache
        self.cache_key = preprocessor.cache_key if cache is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        file = self.records[index].file
        try:
            if self.cache_key:
                side = self.preprocessor.image_size
                pixels = self.cache.get(file, self.cache_key, (side, side, 3))
                if pixels is not None:
                    return index, {"pixels": pixels}, None, True
            arrays = self.preprocessor.load(file)
            if self.cache_key:
                self.cache.put(file, self.cache_key, arrays["pixels"])
            return index, arrays, None, False
        except ImageError as exc:
            return index, None, str(exc), False
        except Exception as exc:  # a decoder bug must not stop a 10,000-image run
            return index, None, f"unexpected {type(exc).__name__}: {exc}", False


class DecodedChunk(NamedTuple):
    """What a decode worker hands back: a few images as one tensor per input (shared memory, no pickling).

    `crashed`: the indices among `failures` that crashed or hung a decoder (confirmed alone in a probe)."""

    indices: list[int]
    arrays: dict[str, torch.Tensor] | None
    failures: list[tuple[int, str]]
    from_cache: int
    crashed: tuple[int, ...] = ()


def collate_decoded(items) -> DecodedChunk:
    """Split a worker chunk into (indices, stacked tensors or None, failures, cache hits)."""
    good = [(index, arrays) for index, arrays, _, _ in items if arrays is not None]
    failures = [(index, reason) for index, arrays, reason, _ in items if arrays is None]
    arrays = None
    if good:
        arrays = {key: torch.from_numpy(value) for key, value in collate([a for _, a in good]).items()}
    return DecodedChunk([index for index, _ in good], arrays, failures, sum(1 for item in items if item[3]))


def lower_priority(_worker_id: int) -> None:
    """Decode at the lowest CPU priority (the model thread comes first)."""
    try:
        os.nice(DECODE_NICENESS)
    except (OSError, AttributeError):  # not permitted, or not a POSIX system: keep the priority
        pass


def describe_exit(exitcode: int | None) -> str:
    """A process's end in words: 'killed by SIGSEGV', 'killed by SIGKILL (out of memory?)', 'exit code 3'."""
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")


def worker_main(decode: DecodeImages, tasks, results, journal, slot: int, nice: bool) -> None:
    """A decode worker: take (number, indices) tasks in order, note each file in the journal, send chunks back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it stops the workers
    torch.set_num_threads(1)
    if nice:
        lower_priority(slot)
    limit_address_space(decode_memory_bound() + WORKER_HEADROOM_BYTES)  # a decoder gone wild: MemoryError
    parent = os.getppid()
    while True:
        try:
            # The main process dying (SIGKILL, out of memory) closes the task pipe (end-of-file below) and
            # ends the fork server, this worker's parent: the check covers a pipe end held open elsewhere.
            while not tasks.poll(PARENT_CHECK_SECONDS):
                if os.getppid() != parent:
                    return
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        number, indices = task
        items = []
        for index in indices:
            journal[2 * slot] = time.monotonic()
            journal[2 * slot + 1] = index
            items.append(decode[index])
        journal[2 * slot + 1] = -1
        results.send((number, collate_decoded(items)))


def probe_main(decode: DecodeImages, index: int, started) -> None:
    """Decode one file alone; the exit status is the verdict (0: the decoder survived it). `started` gets
    the moment the decode begins: the deadline counts from there, as it does in a worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started.value = time.monotonic()
    decode[index]


@dataclasses.dataclass
class Task:
    """A chunk of record indices; `number` orders the results. Culprits found in it travel with it."""

    number: int
    indices: list[int]
    attempts: int = 0
    failures: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    crashed: list[int] = dataclasses.field(default_factory=list)

    def finished(self, chunk: DecodedChunk | None = None) -> DecodedChunk:
        """The chunk to hand on, with the culprits this task lost on the way."""
        chunk = chunk or DecodedChunk([], None, [], 0)
        return chunk._replace(failures=self.failures + chunk.failures, crashed=tuple(self.crashed))


class Worker:
    """One decode process, its two pipes, and the tasks it has been given but not answered (in order)."""

    def __init__(self, context, slot: int, decode: DecodeImages, journal, nice: bool):
        self.slot = slot
        task_reader, self.tasks = context.Pipe(duplex=False)
        self.results, result_writer = context.Pipe(duplex=False)
        self.process = context.Process(
            target=worker_main,
            args=(decode, task_reader, result_writer, journal, slot, nice),
            name=f"scinsearch-decode-{slot}",
            daemon=True,
        )
        self.process.start()
        task_reader.close()
        result_writer.close()
        self.held: collections.deque[Task] = collections.deque()
        self.overran: int | None = None  # the index it was killed for overrunning the deadline on

    def send(self, task: Task) -> bool:
        try:
            self.tasks.send((task.number, task.indices))
        except OSError:  # it died: its death is handled with its other tasks
            self.held.append(task)
            return False
        self.held.append(task)
        return True

    def stop(self, wait: float) -> None:
        try:
            self.tasks.send(None)
        except OSError:
            pass
        self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.tasks.close()
        self.results.close()


def worker_context():
    """Decode workers are forked from a fork server (started once per process, with this module imported),
    never from the main process itself: its other threads (Qdrant Edge's, torch's, a test runner's) may hold a
    lock at the moment of the fork, and a child that needs that lock waits forever while the main process
    waits for its results. A fork server has no other threads; it also keeps the main process's files (the
    store's lock among them) out of the workers.

    The fork server imports this module and the records' (`scinsearch.dataset`) once: each worker unpickles
    its records when it starts, and without them preloaded every worker imported them again, pandas with
    them, ~0.7 s of CPU each (a third of the decode workers' CPU in the test suite). Neither brings pandas
    now: pandas (through pyarrow) starts an allocator thread, and the fork server must stay single-threaded."""
    context = torch.multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, RECORDS_MODULE])
    return context


class DecodePool:
    """`workers` guarded decode processes; `chunks(order)` yields the decoded chunks in order."""

    def __init__(
        self,
        decode: DecodeImages,
        workers: int,
        chunk: int,
        timeout: float = DECODE_TIMEOUT,
        nice: bool = False,
        prefetch: int = PREFETCH,
    ):
        self.decode, self.workers, self.chunk = decode, workers, max(1, chunk)
        self.timeout, self.nice, self.prefetch = timeout, nice, max(1, prefetch)
        self.context = worker_context()
        self.journal = self.context.RawArray("d", 2 * max(1, workers))
        self.pool: list[Worker] = []
        self.deaths_in_a_row = 0  # deaths with no result and no culprit in between: bounded

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close(wait=0.0 if exc_info[0] else 5.0)

    def close(self, wait: float = 5.0) -> None:
        for worker in self.pool:
            worker.stop(wait)
        self.pool = []

    def chunks(self, order: Sequence[int]) -> Iterator[DecodedChunk]:
        tasks = [Task(n, list(order[i : i + self.chunk])) for n, i in enumerate(range(0, len(order), self.chunk))]
        if self.workers <= 0:
            for task in tasks:
                yield collate_decoded([self.decode[index] for index in task.indices])
            return
        queue = collections.deque(tasks)
        done: dict[int, DecodedChunk] = {}
        for slot in range(min(self.workers, len(tasks))):
            self.start_worker(slot)
        for number in range(len(tasks)):
            while number not in done:
                self.dispatch(queue, len(done), max(done, default=-1))
                self.collect(queue, done)
            yield done.pop(number)

    def start_worker(self, slot: int) -> None:
        self.journal[2 * slot + 1] = -1
        worker = Worker(self.context, slot, self.decode, self.journal, self.nice)
        if slot < len(self.pool):
            self.pool[slot] = worker
        else:
            self.pool.append(worker)

    def dispatch(self, queue: collections.deque, buffered: int, newest: int) -> None:
        """Hand out tasks in order while each worker holds fewer than `prefetch` and the results waiting
        to be consumed stay within workers x prefetch (memory does not grow behind one slow chunk)."""
        budget = len(self.pool) * self.prefetch - buffered - sum(len(w.held) for w in self.pool)
        while queue and (budget > 0 or queue[0].number < newest):  # a hole before buffered results goes first
            worker = min(self.pool, key=lambda w: len(w.held))
            if len(worker.held) >= self.prefetch:
                return
            worker.send(queue.popleft())
            budget -= 1

    def collect(self, queue: collections.deque, done: dict[int, DecodedChunk]) -> None:
        """Wait a little for results; then deal with dead workers and with files overrunning the deadline."""
        waiting = [w.results for w in self.pool] + [w.process.sentinel for w in self.pool]
        connection.wait(waiting, timeout=POLL_SECONDS)
        for worker in list(self.pool):
            while worker.held and worker.results.poll():  # a dead worker's results sent before it died count too
                try:
                    number, chunk = worker.results.recv()
                except Exception:  # cut off, or its shared memory went with it: the task is done again
                    worker.process.kill()
                    break
                done[number] = worker.held.popleft().finished(chunk)
                self.deaths_in_a_row = 0
            if not worker.process.is_alive():
                self.replace(worker, queue, done)
        self.kill_overrunning()

    def kill_overrunning(self) -> None:
        now = time.monotonic()
        for worker in self.pool:
            index = int(self.journal[2 * worker.slot + 1])
            if index >= 0 and now - self.journal[2 * worker.slot] > self.timeout and worker.process.is_alive():
                worker.overran = index
                worker.process.kill()

    def replace(self, worker: Worker, queue: collections.deque, done: dict[int, DecodedChunk]) -> None:
        """A worker died: find the file it was on, give its tasks back (less a confirmed culprit), restart it."""
        worker.process.join()
        in_progress = int(self.journal[2 * worker.slot + 1])
        suspect = worker.overran if worker.overran is not None else (in_progress if in_progress >= 0 else None)
        how = (
            f"it overran the {self.timeout:g} s deadline"
            if worker.overran is not None
            else describe_exit(worker.process.exitcode)
        )
        held = list(worker.held)
        worker.held.clear()
        worker.stop(0.0)
        holder = next((task for task in held if suspect in task.indices), None)
        verdict = self.probe(suspect) if holder is not None else None
        if verdict is not None:
            holder.indices.remove(suspect)
            overran = f"; its worker {how}" if worker.overran is not None else ""
            holder.failures.append((suspect, verdict + overran))
            holder.crashed.append(suspect)
            self.deaths_in_a_row = 0
        else:
            self.deaths_in_a_row += 1
            if held:
                held[0].attempts += 1
            if self.deaths_in_a_row > MAX_ATTEMPTS * (len(self.pool) + 1):
                raise ScinSearchError(
                    f"decode workers keep dying with no file to blame (last one {how}): "
                    f"try fewer --workers, or check the memory available"
                )
        for task in reversed(held):
            if task.attempts >= MAX_ATTEMPTS:
                reason = f"its decode worker died {task.attempts} times on this chunk ({how}); no file crashes alone"
                task.failures += [(index, reason) for index in task.indices]
                task.indices = []
            if task.indices:
                queue.appendleft(task)
            else:
                done[task.number] = task.finished()
        self.start_worker(worker.slot)

    def probe(self, index: int) -> str | None:
        """Decode one file alone in a fresh process: why the decoder cannot survive it, or None if it can.
        The deadline counts from the decode, not from the process start: on a loaded machine the start alone
        can outlast a short deadline, and a crash (or a fine file) would be recorded as a hang."""
        started = self.context.Value("d", 0.0, lock=False)
        process = self.context.Process(target=probe_main, args=(self.decode, index, started), daemon=True)
        process.start()
        start_by = time.monotonic() + PROBE_START_SECONDS
        while process.is_alive():
            process.join(POLL_SECONDS)
            began, now = started.value, time.monotonic()
            if (began and now - began > self.timeout) or (not began and now > start_by):
                break
        hung = process.is_alive()
        if hung:
            process.kill()
            process.join()
        if not started.value:  # it never got to the file, stuck or dead: no verdict (its chunk is tried again)
            return None
        if hung:
            return f"the decoder hangs on it (no result within {self.timeout:g} s, alone in a fresh process)"
        if process.exitcode == 0:
            return None
        return f"the decoder crashes on it ({describe_exit(process.exitcode)}, alone in a fresh process)"
