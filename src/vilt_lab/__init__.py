"""vilt_lab: ViLT pre-training and fine-tuning as a Hydra + Accelerate + WebDataset framework."""

__version__ = "0.1.0"
