"""The composition root: from a validated config to the objects a run needs.

Kept apart from the entry points so tests and notebooks build exactly what a run builds:
`data` (the shapes world on first use, the tokenizer, the loaders), `task` (the task module and
its weights: fresh, `model.init_from`, or any checkpoint vilt_lab reads), `settings` (the
trainer's settings, the epoch-to-step arithmetic).
"""
