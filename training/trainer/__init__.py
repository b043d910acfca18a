"""The training engine behind ``training.train``: config, losses, mean teacher, data streams,
checkpoints, distributed set-up, logs and plots (one file per concern)."""
