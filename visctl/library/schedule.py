"""``visctl.lr``: the learning rate, momentum and weight decay of every param group, as training steps them.

The values are what mmengine's ``Runner.train()`` gives its optimizer at each iteration (see
:mod:`visctl.schedules`); the figure is the one ``visctl lr`` draws, and ``result.save(folder)`` writes what
``visctl lr --csv`` writes there: ``lr.png``, ``lr.csv``, ``manifest.json`` and ``index.html``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.library._run import Run
from visctl.options import LrOptions
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter
    from visctl.schedules import Schedule, TrainLoop

#: the one value ``parameter`` may pick -> its axis label (mmpretrain vis_scheduler's ``--parameter``)
PARAMETERS = {"lr": "learning rate", "momentum": "momentum", "wd": "weight decay"}
#: window size bounds in inches: at 100 dpi, 50 inches is 5000 pixels (100 MB of RGBA)
WINDOW_MIN, WINDOW_MAX = 1.0, 50.0
DPI = 100


def parse_window(window_size: str) -> tuple[float, float]:
    """``"W*H"`` (or ``WxH``) in inches, each side within [WINDOW_MIN, WINDOW_MAX]."""
    from visctl.errors import VisctlError

    try:
        w, h = (float(v) for v in window_size.lower().replace("x", "*").split("*"))
    except ValueError:
        raise VisctlError(f"window_size={window_size!r}: not two numbers as width*height",
                          hint="write W*H in inches, e.g. 12*7") from None
    if not (WINDOW_MIN <= w <= WINDOW_MAX and WINDOW_MIN <= h <= WINDOW_MAX):  # NaN fails too
        raise VisctlError(f"window_size={window_size!r}: each side must be {WINDOW_MIN:g} to {WINDOW_MAX:g} inches "
                          "(the plot is drawn at 100 dpi)", hint="write W*H in inches, e.g. 12*7")
    return w, h


def check_style(style: str | None) -> None:
    """A matplotlib style name that exists (or None)."""
    if not style:
        return
    import matplotlib.style

    from visctl.errors import VisctlError

    if style not in matplotlib.style.available and style != "default":
        raise VisctlError(f"unknown matplotlib style {style!r}",
                          hint=f"available: {', '.join(sorted(matplotlib.style.available))}")


def _frozen(a: Any) -> Any:
    import numpy as np

    if a is None:
        return None
    a = np.array(a)  # a copy: the result owns it
    a.setflags(write=False)
    return a


def _no_values() -> np.ndarray:
    import numpy as np

    return np.zeros((0, 0))


@dataclass(frozen=True, eq=False)
class LrGroup:
    """One distinct param group of a schedule: its values at every iteration (read-only ``(iterations,)`` arrays).

    ``path`` is the group's label (the name its columns carry in ``lr.csv``): a schedule's item comes from a
    param group, not from one input; ``members`` are the parameter names in it.
    """

    path: str
    members: tuple[str, ...] = field(repr=False)
    lr: np.ndarray = field(repr=False)
    momentum: np.ndarray | None = field(repr=False)  # momentum or Adam's beta1; None when the optimizer has neither
    weight_decay: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class LrResult(Result):
    """Every iteration's values of every distinct param group, and the figure ``visctl lr`` draws of them.

    ``lr``, ``momentum`` (momentum or Adam's beta1; None when the optimizer has neither) and ``weight_decay``
    are ``(iterations, groups)`` float arrays; ``groups`` labels their columns, ``members`` lists the
    parameters of each. :attr:`values` holds the CSV's columns (``iteration``, ``epoch``, ``lr[group]``, ...).
    """

    command: ClassVar[str] = "lr"

    groups: tuple[str, ...] = ()
    lr: np.ndarray = field(default_factory=lambda: _no_values(), repr=False)
    momentum: np.ndarray | None = field(default=None, repr=False)
    weight_decay: np.ndarray = field(default_factory=lambda: _no_values(), repr=False)
    by_epoch: bool = False
    iters_per_epoch: int | None = None
    total_iters: int = 0
    rule: str = ""
    members: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    title: str = ""  # the plot's
    caption: str = ""  # lr.png's in the manifest and gallery
    parameter: str | None = None
    plot_options: dict[str, Any] = field(default_factory=dict, repr=False)  # window, style, log_scale
    png: bytes = field(default=b"", repr=False)  # the figure as the CLI writes lr.png
    #: the files and folders the dataset size was counted from (inputs: never written over)
    sources: tuple[str, ...] = field(default=(), repr=False, compare=False)
    simulate_s: float = field(default=0.0, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        # the groups as items, made once (their columns are views of the frozen arrays)
        object.__setattr__(self, "_items", tuple(
            LrGroup(label, tuple(self.members[g]) if g < len(self.members) else (), self.lr[:, g],
                          None if self.momentum is None else self.momentum[:, g], self.weight_decay[:, g])
            for g, label in enumerate(self.groups)))

    @property
    def items(self) -> tuple[LrGroup, ...]:
        """One :class:`LrGroup` per column of :attr:`groups`, as the result's sequence."""
        return self.__dict__["_items"]

    @property
    def values(self) -> dict[str, np.ndarray]:
        """The columns of ``lr.csv``: iteration, epoch (epoch-based loops), lr / momentum / weight_decay."""
        return self._schedule().columns()

    def epoch_values(self) -> Mapping[str, np.ndarray]:
        """:attr:`values` at the first iteration of each epoch (epoch-based loops only)."""
        from visctl.errors import ConfigError

        if not (self.by_epoch and self.iters_per_epoch):
            raise ConfigError("the schedule is iteration-based: it has no epochs", hint="use result.values")
        from types import MappingProxyType

        return MappingProxyType({k: v[::self.iters_per_epoch] for k, v in self.values.items()})  # read-only views

    def _loop(self) -> TrainLoop:
        from visctl.schedules import TrainLoop

        if self.by_epoch:
            assert self.iters_per_epoch
            return TrainLoop.build(True, self.total_iters // self.iters_per_epoch, self.iters_per_epoch)
        return TrainLoop.build(False, self.total_iters, self.iters_per_epoch)

    def _schedule(self) -> Schedule:
        from visctl.schedules import Schedule

        return Schedule(groups=list(self.groups), members=[list(m) for m in self.members], lr=self.lr,
                        momentum=self.momentum, weight_decay=self.weight_decay, loop=self._loop(), rule=self.rule)

    def plot(self) -> Any:
        """A fresh matplotlib Figure of the schedule, as ``visctl lr`` draws it."""
        from visctl import schedules

        opts = self.plot_options
        sched = self._schedule()
        if self.parameter is None:
            return schedules.plot(sched, self.title, opts.get("window", (12.0, 7.0)), opts.get("style"),
                                  opts.get("log_scale", False))
        values = {"lr": sched.lr, "momentum": sched.momentum, "wd": sched.weight_decay}[self.parameter]
        assert values is not None  # lr() refuses momentum without one
        # weight_decay constant (zero) and no momentum: schedules.plot then draws one panel
        one = dataclasses.replace(sched, lr=values, momentum=None, weight_decay=values * 0.0)
        fig = schedules.plot(one, self.title, opts.get("window", (12.0, 7.0)), opts.get("style"),
                             opts.get("log_scale", False))
        fig.axes[0].set_ylabel(PARAMETERS[self.parameter])
        return fig

    def encode(self, fmt: str = "png") -> bytes:
        """The figure in ``fmt`` (any format matplotlib's Agg canvas writes), at 100 dpi."""
        if fmt == "png" and self.png:
            return self.png
        import io

        buf = io.BytesIO()
        self.plot().savefig(buf, format=fmt, dpi=DPI)
        return buf.getvalue()

    def figures(self) -> list[Figure]:
        import cv2
        import numpy as np

        bgr = cv2.imdecode(np.frombuffer(self.encode("png"), np.uint8), cv2.IMREAD_COLOR)
        assert bgr is not None  # matplotlib's own PNG
        return [Figure("lr.png", np.ascontiguousarray(bgr[..., ::-1]), self.caption)]

    def write(self, writer: OutputWriter, plot_target: Path | None = None, csv_target: Path | None = None,
              csv: bool = True) -> None:
        """``lr.png`` (or ``plot_target``, in its suffix's format) and ``lr.csv`` (or ``csv_target``)."""
        from visctl import schedules

        for name, target in (("plot_target", plot_target), ("csv_target", csv_target)):
            check_target(self.sources, target, name)
        fmt = plot_target.suffix.lstrip(".") if plot_target is not None and plot_target.suffix else "png"
        writer.write_output("lr.png", self.encode(fmt), "image", caption=self.caption,
                            target=plot_target)
        if csv or csv_target is not None:
            writer.write_output("lr.csv", schedules.csv_text(self.values).encode(), "table",
                                caption="per-iteration values", target=csv_target)
        writer.manifest["timings"]["simulate_s"] = round(self.simulate_s, 3)


def check_target(sources: tuple[str, ...], target: Path | str | None, name: str) -> None:
    """Refuse an output file that is an input of the count: the dataset's annotation file, or a file in the
    folder of images it counted (a user's data file, never written over, as every command's inputs).

    Raises:
        OutputError: naming the file, the dataset and ``name`` (the argument, or the CLI's flag).
    """
    import os
    import stat

    from visctl.errors import OutputError

    if target is None or not sources:
        return
    try:
        st = os.stat(target)  # what a write would replace (through a link, its target)
    except (OSError, ValueError):
        return  # nothing there: nothing of the dataset is written over
    if not stat.S_ISREG(st.st_mode):
        return  # a folder, a FIFO: the writer refuses it itself
    real = Path(os.path.realpath(target))
    for source in sources:
        src = Path(os.path.realpath(source))
        inside = real == src or (src.is_dir() and src in real.parents)
        if inside:
            what = "the annotation file" if real == src else f"a file under {source}"
            raise OutputError(f"{name} {target} is {what} of the training set that lr counts; visctl never writes "
                              "over its inputs", hint=f"give {name} a file outside the dataset's folders "
                              f"({', '.join(sources)})")


def _config_name(config: Any, cfg: Any) -> tuple[str, str]:
    """(the manifest's ``config``, the default title) of a path, a dict or a Config."""
    if isinstance(config, (str, Path)):
        return str(config), Path(config).stem
    filename = getattr(cfg, "filename", None)
    if filename:
        return str(filename), Path(filename).stem
    return "<config>", "config"


def _model_for_groups(cfg: Any) -> tuple[Any, str | None]:
    """The config's model, built as the Runner builds it (its package's registry under ``default_scope``), whose
    parameter names paramwise_cfg and a custom constructor group; or (None, a note saying why the groups are
    a stand-in's)."""
    from visctl import schedules
    from visctl.building import build_model, config_dirs
    from visctl.errors import ModelError

    what = (f"optim_wrapper.constructor {cfg.optim_wrapper.get('constructor')}"
            if cfg.optim_wrapper.get("constructor") else "optim_wrapper.paramwise_cfg")
    stand_in = ("stand-in parameters (backbone.conv/bn/ln, backbone.cls_token/pos_embed, neck, head.fc), not the "
                "model's own: groups and their labels are the stand-in's")
    if not cfg.get("model"):
        return None, f"the config has no model: {what} is applied to {stand_in}"
    import torch

    try:
        # on the meta device: names, shapes, module types and requires_grad, which is all a constructor reads,
        # without memory or initialisation (a ViT-g in a fraction of a second)
        with schedules.quiet_mmengine(), torch.device("meta"):  # build_model reaches no network
            return build_model(cfg.model, cfg.get("default_scope"), config_dirs(cfg)), None
    except Exception:  # model code that reads its tensors' values (a drop-path rate's .item())
        pass
    try:
        with schedules.quiet_mmengine():  # mmpretrain's models log their settings on stdout
            return build_model(cfg.model, cfg.get("default_scope"), config_dirs(cfg)), None
    except ModelError as err:
        return None, f"the config's model cannot be built ({err.message}): {what} is applied to {stand_in}"


@arguments.typed("lr")
def lr(config: Any, settings: LrOptions | None = None, *, model: Any = None, options: RunOptions | None = None,
       session: Session | None = None, **fields: Any) -> LrResult:
    """The lr, momentum and weight decay of every param group at every iteration of ``config``'s training.

    Args:
        config: an mmengine config (a path, a dict or a ``Config``) with ``optim_wrapper``,
            ``param_scheduler`` and ``train_cfg``.
        settings: the options, a :class:`visctl.LrOptions` (the training's size and the plot's look: see its
            fields) [default: its defaults].
        model: the ``nn.Module`` whose parameter names ``paramwise_cfg`` reads [default: the config's model
            when ``paramwise_cfg`` needs one, else a stand-in].
        options: how the run writes and reports (:class:`visctl.RunOptions`).
        session: a :class:`visctl.Session` to run in (its notes, failures and writer) [default: a new one].
        **fields: fields of :class:`visctl.LrOptions` by name (``dataset_size=50_000, ngpus=8``), replacing
            those of ``settings``.
    """
    o = LrOptions.build(settings, **fields)
    return plan(session or Session(options), config, o, model=model).collect()


class LrRun(Run):
    """``visctl lr``'s run: one item, the whole schedule (a :class:`LrResult`), simulated when planned so
    that a config, an option or an output file that does not fit fails before anything is written."""

    command: ClassVar[str] = "lr"

    def __init__(self, session: Session, result: LrResult, plot_target: Path | None = None,
                 csv_target: Path | None = None) -> None:
        self.session, self.result = session, result
        self.params = dict(result.params)
        self.plot_target, self.csv_target = plot_target, csv_target
        self.out_dir = plot_target.parent if plot_target is not None else None  # the plot's folder holds the record

    def items(self) -> Iterator[LrResult]:
        yield self.result

    def record(self, writer: OutputWriter, item: LrResult) -> None:
        """The plot, ``lr.csv`` only where a CSV target is given (the CLI's ``--csv``), and under ``json_out``
        every iteration's values in the manifest."""
        for note in item.notes:
            writer.note(note)
        item.write(writer, plot_target=self.plot_target, csv_target=self.csv_target, csv=False)
        if self.session.options.json_out:
            writer.manifest["values"] = {k: v.tolist() for k, v in item.values.items()}

    def collect(self) -> LrResult:
        return self.result


def plan(session: Session, config: Any, settings: LrOptions, *, model: Any = None, plot_target: Path | None = None,
         csv_target: Path | None = None) -> LrRun:
    """Check the options, load ``config`` and simulate its training's schedule (see :func:`lr`);
    ``plot_target`` and ``csv_target``: where :meth:`LrRun.record` writes the plot and the CSV instead of the
    output folder's ``lr.png`` (none: no CSV)."""
    import time

    from visctl import arguments, schedules
    from visctl import config as config_mod
    from visctl.errors import ConfigError

    o = settings
    arguments.model_spec(config, "config", modules=False)
    if model is not None:
        arguments.model_spec(model)
    from visctl.environment import require_mmengine

    require_mmengine("visctl lr")  # the schedules are mmengine's own (its optimizers, schedulers and hooks)
    parameter = o.parameter.value if o.parameter is not None else None
    window = parse_window(o.window_size)
    check_style(o.style)
    started = time.time()
    cfg = session.load_config(config, models=False)
    name, stem = _config_name(config, cfg)
    optim_cfg = cfg.get("optim_wrapper") or {}
    dataset_size, source = o.dataset_size, "--dataset-size"
    train_set = config_mod.cfg_get(cfg, "train_dataloader.dataset")
    sources = tuple(str(p) for p in schedules.dataset_sources(train_set))  # a user's data: never written over
    if dataset_size is None:
        found = schedules.dataset_size_from_config(train_set)
        dataset_size, source = found if found else (None, "unknown")
    stand_in = None
    if model is None and schedules.needs_model(optim_cfg):
        model, stand_in = _model_for_groups(cfg)
    sched = schedules.schedule_from_config(cfg, dataset_size=dataset_size, batch_size=o.batch_size, ngpus=o.ngpus,
                                           drop_last=o.drop_last, model=model)
    if stand_in:
        sched.notes.insert(0, stand_in)
    for note in sched.notes:
        session.log(note)
    size = f"dataset size {dataset_size} ({source}); " if dataset_size else ""
    session.log(f"{size}{sched.rule}; {sched.total_iters} iterations; {len(sched.groups)} distinct param group(s)")
    simulated = time.time() - started
    if parameter == "momentum" and sched.momentum is None:
        raise ConfigError("the optimizer has no momentum (nor Adam betas) to plot", hint="use parameter=lr or wd")
    caption = f"{o.title or stem}: {sched.rule}"
    title = o.title
    if title is None:
        title = stem if parameter is None else f"{stem} {PARAMETERS[parameter]}"
    result = LrResult(
        params=dict(config=name, dataset_size_from=source, **sched.params, parameter=parameter,
                    **({"log_scale": f"{PARAMETERS[parameter or 'lr']} axis"} if o.log_scale else {})),
        notes=tuple(sched.notes), groups=tuple(sched.groups), lr=_frozen(sched.lr), momentum=_frozen(sched.momentum),
        weight_decay=_frozen(sched.weight_decay), by_epoch=sched.by_epoch, iters_per_epoch=sched.iters_per_epoch,
        total_iters=sched.total_iters, rule=sched.rule, members=tuple(tuple(m) for m in sched.members), title=title,
        caption=caption, parameter=parameter, plot_options=dict(window=window, style=o.style, log_scale=o.log_scale),
        simulate_s=simulated, sources=sources)
    # drawn once: the figure arrays, _repr_png_ and lr.png are these bytes
    png = result.encode("png")
    timings = dict(total_s=round(time.time() - started, 3))  # the call's (a saved manifest's total_s)
    return LrRun(session, dataclasses.replace(result, png=png, timings=timings), plot_target, csv_target)


#: release 0.1's name of :class:`LrResult` (it goes in the next release)
ScheduleResult = LrResult


#: release 0.1's name of :class:`LrGroup` (it goes in the next release)
ScheduleGroup = LrGroup
