"""Student networks and their training: the zoo, augmentation, losses, checkpoints, the data, the
training engine and loop, teacher-in-the-loop distillation, DDP helpers."""
