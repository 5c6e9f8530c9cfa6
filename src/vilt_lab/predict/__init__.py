"""`vilt-predict`: predictions of any vilt_lab checkpoint on one image (NLVR2: a pair) and texts.

ITM match probabilities (ranked), MLM fill-in of [MASK] words, VQA answers with their top-k
scores, NLVR2 verdicts, and the word-patch alignment heatmap; a table, or JSON with --json.

    cli.py        the command line: argument checks before loading, the table and JSON
    modes.py      each task's head, checks, predictions and table rows (MODES: the one dispatch)
    predictor.py  a checkpoint with its tokenizer and image size, inputs prepared as evaluation does
"""

from .cli import main

__all__ = ["main"]
