"""Evaluation: prediction loop, pure metric functions, exact retrieval, the VQA submission writer."""
