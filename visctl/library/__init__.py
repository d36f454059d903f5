"""The public Python API: one function per command, each returning a frozen result (see visctl.results).

Import the functions from ``visctl`` itself (``visctl.cam(...)``); this package holds their code, one module per
command, and imports nothing heavy until a function is called.
"""

#: public name -> (module under visctl.library, attribute): what ``visctl.<name>`` resolves to
EXPORTS: dict[str, tuple[str, str]] = {
    "cam": ("cam", "cam"),
    "featmap": ("featmap", "featmap"),
    "boxam": ("boxam", "boxam"),
    "slice_detect": ("slice", "slice_detect"),
    "embed": ("embed", "embed"),
    "reconstruct": ("reconstruct", "reconstruct"),
    "schedule": ("schedule", "schedule"),
    "pipeline_views": ("pipeline", "pipeline_views"),
    "browse": ("browse", "browse"),
    "audit": ("audit", "audit"),
    "RunOptions": ("_core", "RunOptions"),
    "Session": ("_core", "Session"),
    "Result": ("_core", "Result"),
    "Figure": ("_core", "Figure"),
}
