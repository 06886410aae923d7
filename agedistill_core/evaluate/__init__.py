"""Evaluation: the benchmark and robustness tables, scoring checkpoints across profiles (``report``)
and the SPEC 5 group protocol, fine-tuning per fold (``finetune``)."""
