"""Student networks: model zoo, augmentation, losses, checkpoints, export, DDP helpers."""
