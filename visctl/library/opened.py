"""``visctl.open``: a model opened once and explained many times.

``m = visctl.open(model, checkpoint)`` builds the model, loads its checkpoint and settles its inputs (pipeline,
mean and std, class names' config) once; ``m.cam(img)``, ``m.featmap(img)``, ``m.boxam(img)``, ``m.slice(img)``,
``m.recon(img)`` and ``m.tsne()`` then run the same code as ``visctl.cam(img, model, checkpoint)`` and the others,
on the built model, and return the same results, byte for byte: a notebook that explains 50 images one by one
loads the model once. ``visctl.cam(img, m)`` (any one-shot function given an opened model) does the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from visctl import arguments
from visctl.library._common import Opened
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    from visctl.library._common import BuiltModel, ModelInputs
    from visctl.library.boxam import BoxamResult
    from visctl.library.cam import CamResult
    from visctl.library.embed import TsneResult
    from visctl.library.featmap import FeatmapResult
    from visctl.library.reconstruct import ReconResult
    from visctl.library.slice import SliceResult


@arguments.typed("open")
def open(model: Any, checkpoint: str | Path | None = None, *,  # visctl.open: a module attribute, no builtin shadowed
         options: RunOptions | None = None) -> OpenedModel:
    """Build ``model`` once (and load ``checkpoint``) for many calls of :meth:`OpenedModel.cam` and the others.

    Args:
        model: a config file, a model name (``torchvision.resnet18``), a config dict / mmengine Config, or an
            ``nn.Module``, as every model function takes it.
        checkpoint: its weights [default: the config's ``load_from``].
        options: the shared options (device, threads, seed, ``cfg_options``, ...): the model is built with
            them, and every call on it runs with them.

    Returns:
        An :class:`OpenedModel`; what building it said (the checkpoint's summary, the class names' source) is
        in each of its results' ``notes``, as in a one-shot call's.
    """
    from visctl import arguments
    from visctl.library._common import build_model

    arguments.model_spec(model)
    if isinstance(model, OpenedModel):
        return model
    options = options or RunOptions()
    session = Session(options)
    built = build_model(session, model, str(checkpoint) if checkpoint else None)
    return OpenedModel(built, options, session)


class OpenedModel(Opened):
    """A built model with its inputs' settings (see :func:`open`); its methods are the model commands."""

    def __init__(self, built: BuiltModel, options: RunOptions, session: Session) -> None:
        self._built = built
        self.options = options
        self._device = session.device
        self._notes = tuple(session.notes)  # what building said: every result's notes start with it
        self._protected = dict(session.protected)
        self.builds = 1  # how many times the model was built (once: what this object is for)

    @property
    def model(self) -> Any:
        """The built ``nn.Module`` (an OpenMMLab detector or segmentor as visctl adapts it)."""
        return self._built.model

    @property
    def config(self) -> Any:
        """The model's config (an mmengine Config where mmengine is installed)."""
        return self._built.cfg

    @property
    def checkpoint(self) -> str | None:
        """The checkpoint loaded (the one given, else the config's ``load_from``), or None."""
        return self._built.checkpoint or self._built.cfg.get("load_from")

    @property
    def detector(self) -> bool:
        """Whether visctl reads this model as a detector (boxam, slice)."""
        return self._built.detector

    def __repr__(self) -> str:
        return (f"OpenedModel({self._built.cfg_spec!r}, checkpoint={self.checkpoint!r}, "
                f"model={type(self.model).__name__}, device={self._device!r})")

    # -- the commands --
    def cam(self, images: Any, **fields: Any) -> CamResult:
        """:func:`visctl.cam` on this model: the same ``settings=`` and keyword arguments (the options' fields),
        but ``options`` (given to :func:`open`)."""
        from visctl.library.cam import cam

        return self._run(cam, "cam", images, fields)

    def featmap(self, images: Any, **fields: Any) -> FeatmapResult:
        """:func:`visctl.featmap` on this model."""
        from visctl.library.featmap import featmap

        return self._run(featmap, "featmap", images, fields)

    def boxam(self, images: Any, **fields: Any) -> BoxamResult:
        """:func:`visctl.boxam` on this model (a detector)."""
        from visctl.library.boxam import boxam

        return self._run(boxam, "boxam", images, fields)

    def slice(self, images: Any, **fields: Any) -> SliceResult:
        """:func:`visctl.slice` on this model (a detector); ``deploy=True`` switches a copy of it."""
        from visctl.library.slice import slice

        return self._run(slice, "slice", images, fields)

    def recon(self, images: Any, **fields: Any) -> ReconResult:
        """:func:`visctl.recon` on this model (a masked-image model)."""
        from visctl.library.reconstruct import recon

        return self._run(recon, "recon", images, fields)

    def tsne(self, **fields: Any) -> TsneResult:
        """:func:`visctl.tsne` on this model: its config's dataset embedded."""
        from visctl.library.embed import tsne

        return self._run(lambda model, **kw: tsne(model, **kw), "tsne", None, fields)

    # -- the library's way in --
    def inputs(self, session: Session, checkpoint: str | None = None, paths: list[Path] | None = None,
               ) -> ModelInputs:
        """:func:`visctl.library._common.open_model` for this model: the built model reused, a fresh example
        from ``paths`` (``session`` a call's: it gets the notes building gave, and its seeds set again)."""
        import copy
        import dataclasses

        from visctl.errors import ArgumentError
        from visctl.library._common import model_inputs

        if checkpoint and str(checkpoint) != str(self.checkpoint):
            raise ArgumentError(f"checkpoint={str(checkpoint)!r} for a model opened with {self.checkpoint!r}",
                                hint="leave the checkpoint out (the opened model's is loaded), or open the model "
                                "again: visctl.open(model, checkpoint)")
        if list(session.cfg_options) != list(self.options.cfg_options) or session.device != self._device:
            raise ArgumentError("this call's device or cfg_options (or repo) differ from those the model was "
                                f"opened with (device {self._device!r}, cfg_options {list(self.options.cfg_options)})",
                                hint="open the model again with them: visctl.open(model, checkpoint, "
                                "options=visctl.RunOptions(...))")
        session.protect(*(paths or []))
        for key, path in self._protected.items():
            session.protected.setdefault(key, path)
        session.notes.extend(self._notes)
        session.setup_torch()
        self._reset()
        # a run may change its config (tsne's test_cfg sets the test dataloader): each run gets its own copy
        built = dataclasses.replace(self._built, cfg=copy.deepcopy(self._built.cfg))
        return model_inputs(session, built, paths)

    def _run(self, function: Any, command: str, images: Any, fields: dict[str, Any]) -> Any:
        from visctl.errors import ArgumentError

        if "checkpoint" in fields:
            raise ArgumentError(f"{command}(checkpoint=...) on an opened model: the model was opened with its "
                                "checkpoint", hint="open it again with that one: visctl.open(model, checkpoint)")
        if "session" not in fields and fields.get("options") is None:  # a call's own options (a seed, threads)
            fields["options"] = self.options  # may differ from the opened ones but in device and cfg_options
        try:
            if images is None:
                return function(self, **fields)
            return function(images, self, **fields)
        finally:
            self._reset()

    def _reset(self) -> None:
        """Undo what a run leaves on the model, so that every call starts as a one-shot call's fresh model does:
        cam's channels_last layout, boxam's loss and graph switches on an OpenMMLab detector."""
        model = self._built.model
        for flag in ("loss_mode", "keep_graph"):
            if getattr(model, "is_openmmlab_detector", False) and hasattr(model, flag):
                setattr(model, flag, False)
        if self._built.cfg_spec != "<nn.Module>":  # a caller's module keeps its memory format (cam leaves it)
            import torch

            if any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in model.parameters()):
                model.to(memory_format=torch.contiguous_format)
