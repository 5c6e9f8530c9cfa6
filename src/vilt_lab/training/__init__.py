"""Training machinery: optimizer, schedule, checkpoints, metrics and the Accelerate loop."""
