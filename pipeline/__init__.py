"""The DVC pipeline around the library: config schema and rules, paths, atomic I/O,
launching, checkpoints and tracking. Stage entry points (stages/) import it."""
