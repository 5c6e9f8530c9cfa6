"""The MLM head's logits stay in autocast's dtype: its bias is added inside the matrix product
(as HF's tied decoder bias), not after it, where an fp32 bias would promote a (tokens x
vocabulary) bf16 tensor to a second, fp32 copy."""

from __future__ import annotations

import torch

from vilt_lab.model.heads import MLMHead


def test_mlm_logits_keep_the_autocast_dtype_and_the_bias():
    torch.manual_seed(0)
    head = MLMHead(hidden_size=32, vocab_size=101)
    with torch.no_grad():
        head.bias.normal_()  # zeros at init would hide a dropped bias
    feats = torch.randn(7, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(feats)
    assert low.dtype == torch.bfloat16
    # fp32: the decoder's product plus the bias, the definition HF and the official code share.
    transformed = head.transform(feats)
    reference = transformed @ head.decoder.weight.T + head.bias
    torch.testing.assert_close(head(feats), reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(low.float(), reference, rtol=2e-2, atol=5e-2)
