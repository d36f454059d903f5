"""Runs on several processes (``torchrun``): joining the process group, each rank's shard, gathering the records.

Under ``torchrun --nproc-per-node N -m visctl cam ...`` every rank gathers the same sorted input list, takes a
deterministic shard of it (whole batches, round robin: batch ``k`` of a one-process run goes to rank
``k % N``), writes its own output files, and rank 0 writes the one manifest and gallery of the run from every
rank's records merged back into one-process order. Because a batch holds exactly the images it holds in a
one-process run, and output names come from the whole input list, every file is the one a one-process run
writes, byte for byte.

Nothing here imports torch at module level; outside torchrun (``WORLD_SIZE`` unset or 1) nothing is joined.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visctl.session import Session

#: how long ranks wait for each other at the end of a run (the slowest shard) and in the error handshake
RUN_TIMEOUT = timedelta(hours=2)
ERROR_WAIT = timedelta(seconds=30)
#: how long a rank waits for the others to join the process group (VISCTL_RENDEZVOUS_TIMEOUT, in seconds)
RENDEZVOUS_ENV = "VISCTL_RENDEZVOUS_TIMEOUT"
RENDEZVOUS_TIMEOUT = timedelta(minutes=5)

_CONTROL: dict[str, Any] = {}  # gloo groups: "group" for objects (None: the default one), "errors" for the handshake


#: what torchrun sets for each process, and the hint for a value it would not have set
TORCHRUN_HINT = ("torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE itself: start visctl with "
                 "`torchrun --nproc-per-node N -m visctl ...`, or unset WORLD_SIZE (and RANK) for a one-process run")


def _env_int(name: str, low: int, high: int | None = None, default: int | None = None) -> int | None:
    """The whole number in environment variable ``name`` (``default`` when unset or empty), within
    ``low`` .. ``high - 1``; else a one-line error naming the variable and its value."""
    from visctl.errors import VisctlError

    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise VisctlError(f"torchrun environment: {name}={os.environ[name]!r} is not a whole number",
                          hint=TORCHRUN_HINT) from None
    if value < low or (high is not None and value >= high):
        bound = f"from {low} to {high - 1}" if high is not None else f"at least {low}"
        raise VisctlError(f"torchrun environment: {name}={value} is out of range (it must be {bound})",
                          hint=TORCHRUN_HINT)
    return value


def env_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) when not under torchrun.

    Checked before anything uses them: a value torchrun would never set (``WORLD_SIZE=two``, ``RANK`` not below
    ``WORLD_SIZE``, which would wait for the missing ranks forever) is one error line.

    Raises:
        VisctlError: a variable that is not a whole number, or out of its range.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world is None:  # not under torchrun: RANK and the others are someone else's
        return 0, 1, 0
    from visctl.errors import VisctlError

    rank = _env_int("RANK", 0, world, default=None if world > 1 else 0)
    if rank is None:
        raise VisctlError(f"torchrun environment: WORLD_SIZE={world} but RANK is not set (every process would be "
                          "rank 0)", hint=TORCHRUN_HINT)
    local_world = _env_int("LOCAL_WORLD_SIZE", 1, world + 1)
    local = _env_int("LOCAL_RANK", 0, min(world, local_world or world), default=0)
    _env_int("MASTER_PORT", 0, 65536)
    assert local is not None
    return rank, world, local


def rendezvous_timeout() -> timedelta:
    """How long this rank waits for every rank to join: ``VISCTL_RENDEZVOUS_TIMEOUT`` seconds, else
    :data:`RENDEZVOUS_TIMEOUT`.

    Raises:
        VisctlError: a value that is not a positive number of seconds.
    """
    import math

    from visctl.errors import VisctlError

    raw = os.environ.get(RENDEZVOUS_ENV, "").strip()
    if not raw:
        return RENDEZVOUS_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 7 * 24 * 3600:
        raise VisctlError(f"{RENDEZVOUS_ENV}={os.environ[RENDEZVOUS_ENV]!r} is not a number of seconds",
                          hint=f"give a positive number of seconds (at most a week), e.g. {RENDEZVOUS_ENV}=300, "
                          f"or unset it for the default {int(RENDEZVOUS_TIMEOUT.total_seconds())} s")
    return timedelta(seconds=seconds)


def _wait_line(rank: int, world: int, wait: timedelta) -> str:
    """The line a rank prints before it waits for the others: which rank, of how many, where, how long."""
    addr = os.environ.get("MASTER_ADDR", "").strip() or "(MASTER_ADDR unset)"
    port = os.environ.get("MASTER_PORT", "").strip() or "(MASTER_PORT unset)"
    others = world - 1
    return (f"torchrun: rank {rank} of {world} (WORLD_SIZE={world}) waits at {addr}:{port} for the other "
            f"{others} rank{'s' if others != 1 else ''} to join (at most {wait.total_seconds():g} s, "
            f"{RENDEZVOUS_ENV})")


def join(session: Session) -> tuple[int, int]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1): join the process group and put this rank on its own GPU.

    ``--device auto`` or ``cuda`` becomes ``cuda:LOCAL_RANK`` where CUDA exists, and the group is nccl there,
    gloo on CPU (an explicit ``cuda:N`` is kept). Objects (records, scales) travel through a gloo group either
    way. Sets ``session.rank`` and ``session.world``; returns ``(rank, world)``, ``(0, 1)`` when alone. Safe
    to call twice.
    """
    rank, world, local = env_ranks()
    session.rank, session.world = rank, world
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    spec = session.options.device.strip().lower()
    if spec in ("auto", "cuda") and torch.cuda.is_available():
        spec = f"cuda:{local}"
        session.use_device(spec)
    from visctl.errors import DeviceError, VisctlError

    if spec.startswith("cuda") and torch.cuda.is_available():
        gpu = torch.device(spec if ":" in spec else f"cuda:{local}")
        if gpu.index is not None and gpu.index >= torch.cuda.device_count():
            raise DeviceError(f"rank {rank} (LOCAL_RANK {local}) has no GPU cuda:{gpu.index}: this machine has "
                              f"{torch.cuda.device_count()}", hint="start at most one process per GPU "
                              "(torchrun --nproc-per-node), or give device='cpu'")
        torch.cuda.set_device(gpu)
    elif spec.startswith("cuda"):
        raise DeviceError(f"device={spec!r}: CUDA is not available on this machine",
                          hint="use device='cpu' (or device='auto'): the ranks then join with gloo")
    if not dist.is_initialized():
        import sys
        import time

        wait = rendezvous_timeout()
        # before a wait that may be long: a stale WORLD_SIZE/RANK in the shell would otherwise look like a hang
        if not (os.environ.get("TORCHELASTIC_RUN_ID") and session.quiet):  # --quiet under torchrun
            print(_wait_line(rank, world, wait), file=sys.stderr, flush=True)
        started = time.monotonic()
        try:  # the rendezvous (the store, every rank's connection) is bounded by ``wait``
            dist.init_process_group("nccl" if spec.startswith("cuda") else "gloo", timeout=wait)
        except (RuntimeError, ValueError) as exc:  # no MASTER_ADDR (WORLD_SIZE set by hand), a port in use
            if time.monotonic() - started >= wait.total_seconds() * 0.9 or "timed out" in str(exc).lower():
                raise VisctlError(
                    f"torchrun: rank {rank} of {world} waited {wait.total_seconds():g} s at "
                    f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')} and the other "
                    f"rank{'s' if world > 2 else ''} never joined",
                    hint="run visctl under torchrun (`torchrun --nproc-per-node N -m visctl ...`), or unset "
                    f"WORLD_SIZE and RANK (stale from another run) for a one-process run; {RENDEZVOUS_ENV} sets "
                    "the wait in seconds") from None
            raise VisctlError(f"cannot join the torchrun process group: {exc}",
                              hint="start visctl with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR and "
                              "MASTER_PORT), or unset WORLD_SIZE for a one-process run") from None
        # joined: from now on the ranks wait for each other's shards as long as a run may take
        set_timeout = getattr(dist, "set_timeout", None) or getattr(dist.distributed_c10d, "_set_pg_timeout", None)
        if set_timeout is not None:
            set_timeout(RUN_TIMEOUT)
        _CONTROL.clear()
    if "group" not in _CONTROL:
        _CONTROL["group"] = (None if dist.get_backend() == "gloo"
                             else dist.new_group(backend="gloo", timeout=RUN_TIMEOUT))
        # its own group: a rank in the handshake must never meet another rank's gather
        _CONTROL["errors"] = dist.new_group(backend="gloo", timeout=RUN_TIMEOUT)
    return rank, world


def active() -> bool:
    """Whether this process is one rank of several, in a joined process group."""
    from visctl.errors import VisctlError

    try:
        if env_ranks()[1] <= 1:
            return False
    except VisctlError:  # a command that does not shard never joined (one that does stopped at join)
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def leave() -> None:
    """Wait for every rank (rank 0 has written the run's record), then leave the process group."""
    if not active():
        return
    import torch.distributed as dist

    dist.barrier(group=_CONTROL.get("group"))
    dist.destroy_process_group()
    _CONTROL.clear()


def error_handshake() -> bool:
    """After an error on this rank: wait (at most :data:`ERROR_WAIT`) for every rank to reach the same point.

    True when all did: the same error happened everywhere (a bad option, a missing file: every rank reads the
    same inputs), so rank 0 alone reports it. False when some rank is still working: this rank reports its own.
    """
    if not active():
        return False
    import torch.distributed as dist

    try:
        dist.monitored_barrier(group=_CONTROL.get("errors"), timeout=ERROR_WAIT, wait_all_ranks=True)
        return True
    except Exception:  # noqa: BLE001 - a rank that did not come (RuntimeError, DistBackendError)
        return False


def shard(items: Sequence[Any], chunk: int, rank: int, world: int) -> list[Any]:
    """This rank's part of ``items``: whole chunks of ``chunk`` items, chunk ``k`` to rank ``k % world``.

    A chunk is a batch of a one-process run, so each image meets the same batch-mates (and the same batched
    arithmetic) on whichever rank it lands.
    """
    chunk = max(1, int(chunk))
    return [x for k, start in enumerate(range(0, len(items), chunk)) if k % world == rank
            for x in items[start:start + chunk]]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank; ``[obj]`` when alone."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(out, obj, group=_CONTROL.get("group"))
    except Exception as exc:  # noqa: BLE001 - RuntimeError, DistBackendError: another rank is gone
        raise _rank_gone(exc) from None
    return out


def _rank_gone(exc: BaseException) -> Exception:
    from visctl.errors import VisctlError

    return VisctlError(f"another rank of this torchrun stopped before the end ({type(exc).__name__})",
                       hint="its own message is above; this rank's files are on disk but the run's manifest "
                       "lists only what rank 0 gathered")


def in_run_order(parts: Sequence[Sequence[tuple[Any, Any]]], paths: Sequence[Any], chunk: int) -> list[Any]:
    """Per-rank lists of ``(input path, value)``, each in its rank's order, merged into one-process order.

    A one-process run goes through the chunks in order, and all of one chunk's values come from one rank, in
    that rank's order; a value whose path is no input (a whole-run remark) sorts first, a duplicate of it
    (every rank found it) is kept once.
    """
    chunk = max(1, int(chunk))
    where = {str(p): i // chunk for i, p in enumerate(paths)}
    tagged, seen = [], set()
    for r, part in enumerate(parts):
        for j, (path, value) in enumerate(part):
            k = where.get(str(path), -1)
            if k < 0:
                key = repr(value)
                if key in seen:
                    continue
                seen.add(key)
            tagged.append((k, r, j, value))
    tagged.sort(key=lambda t: t[:3])
    return [t[3] for t in tagged]


#: the manifest's per-input lists, and the key of each record that names its input
RECORDS = (("outputs", "input"), ("inputs", "path"), ("failures", "path"))


def merge_records(writer: Any, paths: Sequence[Any], chunk: int, extra: Any = None) -> list[Any]:
    """Merge every rank's ``outputs``, ``inputs``, ``failures`` and ``notes`` into ``writer``'s manifest, as a
    one-process run lists them; every rank gets the merged lists (so each knows whether any input failed).

    ``extra``: anything else of this rank the run needs whole (scores, scales, result rows); returns every
    rank's, in rank order. Alone, changes nothing and returns ``[extra]``.
    """
    if not active():
        return [extra]
    flush = getattr(writer, "flush", None)
    if callable(flush):  # a writer that writes in the background: this rank's files are on disk before rank 0 lists them
        flush()
    manifest = writer.manifest
    parts = gather(dict(records={key: manifest[key] for key, _ in RECORDS}, notes=manifest["notes"], extra=extra))
    for key, field in RECORDS:
        manifest[key] = in_run_order([[(rec.get(field), rec) for rec in part["records"][key]] for part in parts],
                                     paths, chunk)
    notes = list(parts[0]["notes"])
    for part in parts[1:]:
        notes += [n for n in part["notes"] if n not in notes]
    manifest["notes"] = notes
    manifest["world_size"] = len(parts)
    return [part["extra"] for part in parts]


def with_positions(values: Sequence[tuple[Any, Any]], paths: Sequence[Any], chunk: int,
                   ) -> tuple[list[Any], list[int]]:
    """Every rank's ``(input path, value)`` in one-process order, and where this rank's values lie in it.

    What a whole-run computation needs from the other ranks before it can go on, e.g. the shared colour scales
    of ``featmap --normalize per_layer|global``: minima and maxima over the maps in order, so the merged list
    gives exactly a one-process run's. Alone: the values, at their own positions.
    """
    parts = gather([(p, (j, v)) for j, (p, v) in enumerate(values)])
    merged = in_run_order([[(p, (r, j, v)) for p, (j, v) in part] for r, part in enumerate(parts)], paths, chunk)
    rank = env_ranks()[0] if len(parts) > 1 else 0
    mine = [0] * len(values)
    for pos, (r, j, _v) in enumerate(merged):
        if r == rank:
            mine[j] = pos
    return [v for _r, _j, v in merged], mine
