"""The public Python API: one function per command, each returning a frozen result (see visctl.results).

Import the functions from ``visctl`` itself (``visctl.cam(...)``); this package holds their code, one module per
command, and imports nothing heavy until a function is called.
"""

#: public name -> (module under visctl.library, or a whole module name, attribute): what ``visctl.<name>`` is
EXPORTS: dict[str, tuple[str, str]] = {
    "cam": ("cam", "cam"),
    "featmap": ("featmap", "featmap"),
    "boxam": ("boxam", "boxam"),
    "slice": ("slice", "slice"),
    "tsne": ("embed", "tsne"),
    "recon": ("reconstruct", "recon"),
    "lr": ("schedule", "lr"),
    "pipeline": ("pipeline", "pipeline"),
    "browse": ("browse", "browse"),
    "audit": ("audit", "audit"),
    "open": ("opened", "open"),
    "OpenedModel": ("opened", "OpenedModel"),
    "RunOptions": ("_core", "RunOptions"),
    "Session": ("_core", "Session"),
    "Result": ("_core", "Result"),
    "Figure": ("_core", "Figure"),
    **{name: ("visctl.options", name) for name in (
        "CamOptions", "FeatmapOptions", "BoxamOptions", "SliceOptions", "TsneOptions", "ReconOptions", "LrOptions",
        "PipelineOptions", "BrowseOptions", "AuditOptions")},
}

#: the names of release 0.1 -> the name that replaces each (``visctl.<old>`` warns, and is the same function);
#: they go in the next release
DEPRECATED: dict[str, str] = {
    "slice_detect": "slice",
    "embed": "tsne",
    "reconstruct": "recon",
    "schedule": "lr",
    "pipeline_views": "pipeline",
}
