"""Training machinery: the loop (AdamW, schedule, early stopping, AMP, accumulation, FGM), checkpoints
(safetensors + JSON, resumable), distributed data-parallel through torchrun, and the train/forecast
commands. Models import this lazily, only when they are fit or saved, so predicting needs none of it.
"""
