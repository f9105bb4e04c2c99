"""Training: schedules, checkpoints and the trainer loop."""
