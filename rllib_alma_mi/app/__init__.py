"""The application layer: command line, experiment files, evaluation, plotting, rendering, checkpoints."""
