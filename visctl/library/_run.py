"""The one shape of every command's run: :class:`Run`, made by each library module's ``plan(...)``.

A run is planned (the options checked, the model or dataset opened), then yields its items one by one
(:meth:`Run.items`: an image's maps, a layer's embedding, a page of samples), each of which the CLI writes as it
comes (:meth:`Run.record`) and the library gathers into a frozen result (:meth:`Run.collect`). What is not an
item -- the merge of torchrun's ranks, the run-wide files (a ranking, a report) -- has a step of its own, and one
driver calls the steps in order: ``visctl.commands._shared.execute`` for the CLI, :meth:`Run.collect` for the
library. No typer, no rich: a run speaks through its :class:`visctl.Session`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from visctl.output.writer import OutputWriter
    from visctl.results import Result
    from visctl.session import Session

#: :attr:`Run.writer_threads`: the writer draws, encodes and writes in ``io_threads(--threads)`` threads
IO_THREADS = -1


#: where a call begins: the session's failures and notes counts, and the time (:func:`mark`; 0.0: not marked)
Since = tuple[int, int, float]


def mark(session: Session) -> Since:
    """The session's (failures, notes) counts and the time now: where a call begins (:attr:`Run.since`), so that
    its result gathers its own and not those of an earlier call in the same ``session=``, and its time."""
    import time

    return len(session.failures), len(session.notes), time.time()


class Run:
    """One command's run over its inputs: the steps the CLI's driver and :meth:`collect` call, in order.

    A subclass sets :attr:`params` (the manifest's params) and implements :meth:`items` and :meth:`collect`;
    the other steps do nothing unless it overrides them.
    """

    command: ClassVar[str] = ""
    session: Session
    #: the manifest's params: the options as they were used
    params: dict[str, Any]
    #: where the CLI writes (a single ``--out-file``'s folder); None: the run's ``--out-dir``
    out_dir: Path | None = None
    #: threads that draw and write the CLI's outputs beside the run: :data:`IO_THREADS`, a number, or 0 (the
    #: writes happen in the run's own thread)
    writer_threads: int = 0
    #: how many outputs may wait for those threads (a batch's figures)
    writer_queue: int = 0
    #: what planning the run remarked (an option that does not apply): the manifest's notes after the session's
    notes: tuple[str, ...] = ()
    #: the session's (failures, notes) counts and the time when the call began (:func:`mark`): set by ``plan``,
    #: or by the library function where it spoke through the session first (the images found, the model loaded)
    since: Since = (0, 0, 0.0)

    def begin(self, writer: OutputWriter) -> None:
        """The CLI's record is open, before the first item (every rank): a run that writes beside the writer
        (tsne streams its features into the output folder and lists them as they are completed) keeps it."""

    def items(self) -> Iterator[Any]:
        """Run the inputs, yielding each finished item (the library's result items, or what :meth:`record`
        writes)."""
        raise NotImplementedError

    def record(self, writer: OutputWriter, item: Any) -> None:
        """Write one item as the CLI does, keeping the manifest true at once (by default ``item.write``)."""
        item.write(writer)

    def merge_ranks(self, writer: OutputWriter) -> None:
        """Under torchrun, after the last item: every rank's records merged on every rank (one process: no-op)."""

    def close(self, writer: OutputWriter) -> None:
        """On rank 0, after the last item or an error: the run-wide outputs (ranking, report, warnings)."""

    def summary(self) -> list[str]:
        """Lines printed after the outputs are written (a per-class table)."""
        return []

    def failed_checks(self) -> list[str]:
        """What failed a check the user set (``--fail-under``): exit 1 saying them, after every output is written."""
        return []

    def collect(self) -> Result:
        """Run every item and gather the frozen result (what a library call returns), its run record from
        :meth:`gathered`."""
        raise NotImplementedError

    def gathered(self, params: dict[str, Any] | None = None, *, failures: tuple[tuple[str, str], ...] = (),
                 notes: tuple[str, ...] = ()) -> dict[str, Any]:
        """A result's run record, as the CLI's manifest has it: ``params`` [default: :attr:`params`] with the
        session's pixel budget; ``failures`` then the inputs skipped since :attr:`since`; the notes made since
        then, :attr:`notes`, then ``notes`` (what the run remarked as it went); ``timings``: ``total_s``, the
        call's time until now (the manifest's, where :meth:`visctl.Result.save` writes it)."""
        import time

        failed, noted, began = self.since
        session = self.session
        params = self.params if params is None else params
        if session.max_pixels is not None:
            params = dict(params, max_pixels=session.max_pixels)
        return dict(params=params, failures=failures + tuple((f.path, f.error) for f in session.failures[failed:]),
                    notes=tuple(session.notes[noted:]) + self.notes + notes,
                    timings=dict(total_s=round(time.time() - began, 3)) if began else {})
