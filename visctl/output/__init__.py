"""A run's outputs: file operations, the manifest, the checks before a run, the writer, vis backends."""
