"""Fault check: kill ``aod synthesize`` at random points while it writes to S3, resume, count rows.

A real S3 API on loopback (moto's server mode) holds the spec's files (the example
``seattle-weather`` partition, filled by the tiny random DLM) and the output. Two clean runs
first write the reference tables for two targets, ``--rows`` and ``--rows - 2`` rows. Then each
trial runs ``aod synthesize`` into one shared output, alternating the two targets (so that every
trial replaces the commit of the one before), and kills it once with SIGKILL in one of three ways:

- ``driver``: the driver process, after a random share of a clean run's time;
- ``actor``: one of the driver's Ray workers running the DLM actor, at a random moment of its
  work (Ray restarts it and retries its batches; a driver still running long after is killed);
- ``commit``: the driver kills itself right before one of the storage operations of its
  commit (its last data file, its quarantine, ``report.json``, the manifest, the deletion of the
  previous commit) or right after the last, each in turn; the trap is installed by this script
  in the driver it starts, not in the package.

Right after the kill it reads the partition as any reader does (through the manifest): a read is
*torn* unless it finds nothing or a whole commit, one of the two reference tables. Then it resumes
(the same command, to the end) and compares the committed rows with the target's reference: a
*lost* row is a reference row missing from the table, a *duplicated* row a second row with a
record id already in it, a *stray* folder one left beside the committed folder. All along, a
thread reads the partition the same way every 0.3 s, counting torn reads too; a read whose files
were deleted under it (a previous commit, once the next one is written) is counted as *vanished*
(the reader reads the manifest again), never as a read.

    python bench/faults.py [--kills 24] [--rows 12] [--seed 0] [--out bench/results/faults.json]

Exits with 1 when a row was lost or duplicated, a read was torn, or a resume failed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: the package imports
    sys.path.insert(0, str(ROOT))

from aod_ops import storage  # noqa: E402
from aod_ops.output import RECORD_ID, committed_dir  # noqa: E402

EXAMPLES = ROOT / "examples"
PARTITION = "seattle-weather"
KINDS = ("driver", "actor", "commit")
COMMIT_STEPS = 5  # data, quarantine, report, manifest, previous commit deleted
ACTOR = "DLMGenerator"


@dataclass
class Trial:
    """One kill and its resume: what was killed and when, what a reader saw, what was committed."""

    number: int
    kind: str
    target: int
    killed_at_s: float | None = None
    commit_step: int | None = None
    killed: bool = False
    read_after_kill: str = ""
    torn: bool = False
    resumed: bool = False
    rows: int = 0
    lost: int = 0
    duplicated: int = 0
    extra: int = 0
    stray_folders: int = 0


@dataclass
class Summary:
    """Every trial and the totals the floor is about."""

    kills: int
    by_kind: dict[str, int]
    rows_lost: int
    rows_duplicated: int
    rows_extra: int
    torn_reads: int
    concurrent_reads: int
    vanished_reads: int
    failed_resumes: int
    stray_folders: int
    clean_run_s: float
    trials: list[Trial] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, duplicated or torn, and every resume finished."""
        return not (
            self.rows_lost
            or self.rows_duplicated
            or self.rows_extra
            or self.torn_reads
            or self.failed_resumes
        )


def write_spec(bucket: str) -> str:
    """The example weather partition with its schema, reference and holdout on S3; the spec's URI."""
    for name in (
        f"schemas/{PARTITION}.json",
        f"data/{PARTITION}_reference.jsonl",
        f"data/{PARTITION}_holdout.jsonl",
    ):
        storage.write_bytes(f"{bucket}/spec/{name}", (EXAMPLES / name).read_bytes())
    entry = {
        "name": PARTITION,
        "schema": f"schemas/{PARTITION}.json",
        "reference": f"data/{PARTITION}_reference.jsonl",
        "holdout": f"data/{PARTITION}_holdout.jsonl",
        "rows": 8,
        "notes": "Daily weather at Seattle, 2012-2015.",
    }
    spec = f"{bucket}/spec/partitions.yaml"
    storage.write_text(spec, yaml.safe_dump({"defaults": {"dlm": "tiny-random"}, "partitions": [entry]}))
    return spec


def committed_ids(out: str) -> list[str] | None:
    """The record ids a reader finds in the partition's committed table, None when none is."""
    folder = committed_dir(out, PARTITION)
    if folder is None:
        return None
    ids: list[str] = []
    for file in storage.list_files(storage.join(folder, "data"), ".parquet"):
        with storage.open_file(file) as handle:
            ids.extend(pq.read_table(handle, columns=[RECORD_ID]).column(RECORD_ID).to_pylist())
    return ids


class Reader(threading.Thread):
    """Reads the partition through its manifest every ``period`` seconds until stopped, and
    counts the reads, the torn ones (neither nothing nor a whole reference table) and the
    vanished ones (files deleted while they were read)."""

    def __init__(self, out: str, references: Sequence[list[str]], period: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.out, self.references, self.period = out, references, period
        self.reads = self.torn = self.vanished = 0
        self.done = threading.Event()

    def run(self) -> None:
        """Read until ``done`` is set."""
        while not self.done.wait(self.period):
            try:
                seen = committed_ids(self.out)
            except (OSError, pa.ArrowException):
                self.vanished += 1
                continue
            self.reads += 1
            self.torn += seen is not None and seen not in self.references


def _driver_command(spec: str, out: str, rows: int, commit_step: int | None) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "driver"]
    if commit_step is not None:
        command += ["--die-at-commit-step", str(commit_step)]
    return [*command, "--", "synthesize", "--spec", spec, "--out", out, "--rows", str(rows), "--actors", "1"]


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)


def _actor(driver: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The driver's Ray worker that runs the DLM actor, if it runs now."""
    try:
        for process in psutil.Process(driver.pid).children(recursive=True):
            if ACTOR in " ".join(process.cmdline()):
                return process
    except psutil.Error:
        return None
    return None


def run_trial(
    trial: Trial, spec: str, out: str, clean_s: float, rng: random.Random, logs: Path
) -> subprocess.Popen[bytes]:
    """Start the driver and kill it (or its actor, or let it kill itself) as the trial says."""
    log = logs / f"trial-{trial.number:02d}.log"
    started = time.monotonic()
    if trial.kind == "commit":
        driver = _start(_driver_command(spec, out, trial.target, trial.commit_step), log)
        driver.wait(timeout=10 * clean_s)
        trial.killed = driver.returncode == -signal.SIGKILL
    elif trial.kind == "driver":
        driver = _start(_driver_command(spec, out, trial.target, None), log)
        delay = rng.uniform(0.15, 1.0) * clean_s
        try:
            driver.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
            trial.killed = True
    else:
        driver = _start(_driver_command(spec, out, trial.target, None), log)
        # A moment of the actor's share of the run: from when it runs to a clean run's end.
        deadline = started + clean_s
        while driver.poll() is None and _actor(driver) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, max(0.5, 0.7 * (deadline - time.monotonic()))))
        actor = _actor(driver)
        if actor is not None:
            actor.kill()
            trial.killed = True
        try:
            driver.wait(timeout=5 * clean_s)
        except subprocess.TimeoutExpired:  # stuck without its actor: the driver goes too
            driver.kill()
            driver.wait()
    trial.killed_at_s = round(time.monotonic() - started, 2)
    return driver


def check(
    bucket: str,
    kills: int,
    rows: int,
    seed: int = 0,
    kinds: Sequence[str] | None = None,
    logs: Path | None = None,
    echo: Any = print,
) -> Summary:
    """Run the reference runs, then trials until ``kills`` kills landed (a driver that ended
    before its kill is a missed trial; at most ``3 * kills`` trials), against the S3 ``bucket``
    (the environment points at its endpoint), and count what was lost, duplicated and torn.

    :param kinds: the kills in turn, a missed one tried again (default: drawn from ``KINDS``).
    """
    rng = random.Random(seed)
    logs = logs or Path(os.environ.get("TMPDIR", "/tmp")) / f"aod-faults-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    spec = write_spec(bucket)
    targets = (rows, rows - 2)
    references: dict[int, list[str]] = {}
    clean = []
    for target in targets:
        started = time.monotonic()
        done = subprocess.run(
            _driver_command(spec, f"{bucket}/reference-{target}", target, None),
            capture_output=True,
            check=False,
        )
        clean.append(time.monotonic() - started)
        ids = committed_ids(f"{bucket}/reference-{target}")
        if done.returncode != 0 or ids is None or len(ids) != target:
            raise RuntimeError(f"the clean run of {target} rows failed:\n{done.stdout.decode()[-3000:]}")
        references[target] = ids
    clean_s = max(clean)
    echo(f"clean runs: {', '.join(f'{t} rows' for t in targets)} in {', '.join(f'{s:.1f} s' for s in clean)}")
    out = f"{bucket}/faults"
    reader = Reader(out, list(references.values()))
    reader.start()
    trials: list[Trial] = []
    while sum(t.killed for t in trials) < kills and len(trials) < 3 * kills:
        number = len(trials) + 1
        landed = sum(t.killed for t in trials)
        kind = kinds[landed % len(kinds)] if kinds else rng.choice(KINDS)
        trial = Trial(number, kind, targets[number % 2])
        if kind == "commit":  # every step of the commit in turn
            trial.commit_step = sum(t.killed and t.kind == kind for t in trials) % (COMMIT_STEPS + 1) + 1
        run_trial(trial, spec, out, clean_s, rng, logs)
        seen = committed_ids(out)
        whole = [t for t, ids in references.items() if seen == ids]
        trial.read_after_kill = (
            "nothing" if seen is None else f"{whole[0]} rows" if whole else f"{len(seen)} rows"
        )
        trial.torn = seen is not None and not whole
        with (logs / f"trial-{number:02d}.log").open("ab") as log:
            try:
                resume = subprocess.run(
                    _driver_command(spec, out, trial.target, None),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=10 * clean_s,
                    check=False,
                )
                trial.resumed = resume.returncode == 0
            except subprocess.TimeoutExpired:
                trial.resumed = False
        ids = committed_ids(out) or []
        reference = set(references[trial.target])
        trial.rows = len(ids)
        trial.lost = len(reference - set(ids))
        trial.duplicated = len(ids) - len(set(ids))
        trial.extra = len(set(ids) - reference)
        trial.stray_folders = len(storage.list_folders(f"{out}/{PARTITION}")) - 1
        trials.append(trial)
        echo(
            f"trial {number:2d} {kind:6s} target {trial.target:2d}: killed at {trial.killed_at_s:5.1f} s "
            f"(step {trial.commit_step or '-'}) {'' if trial.killed else '(missed) '}reader saw "
            f"{trial.read_after_kill}; resumed {'ok' if trial.resumed else 'FAILED'}: {trial.rows} rows, "
            f"lost {trial.lost}, duplicated {trial.duplicated}, extra {trial.extra}"
        )
    reader.done.set()
    reader.join()
    killed = [t for t in trials if t.killed]
    return Summary(
        kills=len(killed),
        by_kind={kind: sum(t.kind == kind for t in killed) for kind in KINDS},
        rows_lost=sum(t.lost for t in trials),
        rows_duplicated=sum(t.duplicated for t in trials),
        rows_extra=sum(t.extra for t in trials),
        torn_reads=sum(t.torn for t in trials) + reader.torn,
        concurrent_reads=reader.reads,
        vanished_reads=reader.vanished,
        failed_resumes=sum(not t.resumed for t in trials),
        stray_folders=sum(t.stray_folders for t in trials),
        clean_run_s=round(clean_s, 2),
        trials=trials,
    )


@contextmanager
def loopback_s3() -> Iterator[str]:
    """A moto S3 server on a free loopback port with the ``AWS_*`` environment pointing at it;
    yields a new bucket's URI."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        fs, _ = storage.filesystem("s3://aod-faults")
        fs.mkdir("aod-faults")
        yield "s3://aod-faults"
    finally:
        server.stop()


def _trap_commit(step: int) -> None:
    """Make this process SIGKILL itself right before storage operation ``step`` of its commit (or
    right after the commit's last, when it has fewer)."""
    from aod_ops import output

    done = 0
    committing = False
    write_bytes, remove, commit = storage.write_bytes, storage.remove, output.PartitionWriter.commit

    def maybe_die() -> None:
        nonlocal done
        done += 1
        if committing and done == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def trapped_write(location: storage.Location, data: bytes) -> None:
        maybe_die()
        write_bytes(location, data)

    def trapped_remove(location: storage.Location) -> None:
        maybe_die()
        remove(location)

    def trapped_commit(self: output.PartitionWriter, report: dict[str, Any]) -> storage.Location:
        nonlocal committing, done
        committing, done = True, 0
        folder = commit(self, report)
        os.kill(os.getpid(), signal.SIGKILL)  # the commit had fewer operations than `step`
        return folder

    storage.write_bytes = trapped_write
    storage.remove = trapped_remove
    output.PartitionWriter.commit = trapped_commit  # type: ignore[method-assign]


def _driver(argv: list[str]) -> int:
    """``faults.py driver [--die-at-commit-step N] -- <aod arguments>``: the killed process."""
    parser = argparse.ArgumentParser(prog="faults.py driver")
    parser.add_argument("--die-at-commit-step", type=int)
    parser.add_argument("aod", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.die_at_commit_step is not None:
        _trap_commit(args.die_at_commit_step)
    from aod_ops.cli import main

    return main([a for a in args.aod if a != "--"])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fault check on a loopback S3 and write the summary as JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["driver"]:
        return _driver(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=24, help="trials, each with one kill (default 24)")
    parser.add_argument("--rows", type=int, default=12, help="the larger of the two targets (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "faults.json")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with loopback_s3() as bucket:
        summary = check(bucket, args.kills, args.rows, args.seed, echo=functools.partial(print, flush=True))
    from aod_ops.ray.adapter import reap_dead_clusters

    reap_dead_clusters()  # a killed driver's cluster that no resume cleaned up
    result = {**asdict(summary), "ok": summary.ok, "seconds": round(time.monotonic() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{summary.kills} kills ({', '.join(f'{k} {n}' for k, n in summary.by_kind.items())}): "
        f"rows lost {summary.rows_lost}, duplicated {summary.rows_duplicated}, extra {summary.rows_extra}; "
        f"torn reads {summary.torn_reads} (of {len(summary.trials)} after the kills, "
        f"{summary.concurrent_reads} concurrent; {summary.vanished_reads} vanished); "
        f"failed resumes {summary.failed_resumes}; "
        f"stray folders {summary.stray_folders} -> {args.out}"
    )
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
