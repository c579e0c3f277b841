"""backend="func" (torch.func.vmap) with Hugging Face models: sdpa attention → an error saying what to do."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from transformers import LlamaConfig, LlamaForCausalLM

import grass_rs


def _llama(attn: str | None) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {} if attn is None else {"attn_implementation": attn}
    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=40, max_position_embeddings=32, bos_token_id=1,
                      eos_token_id=1, **kw)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(2, 40, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def test_default_sdpa_attention_names_the_fix() -> None:
    model = _llama(None)
    assert model.config._attn_implementation != "eager"  # the default (sdpa)
    att = grass_rs.Attributor(model, backend="func", compressor=None, progress=False)
    with pytest.raises(grass_rs.InvalidArgumentError) as info:
        att.batch_gradients(_batch())
    msg = str(info.value)
    assert 'attn_implementation="eager"' in msg and "backend='hooks'" in msg, msg
    assert isinstance(info.value.__cause__, RuntimeError)  # the torch error stays attached


def test_eager_attention_works_and_matches_the_hooks_backend() -> None:
    model = _llama("eager")
    batch = _batch()
    func = grass_rs.Attributor(model, backend="func", compressor=None, progress=False)
    g = func.batch_gradients(batch)
    hooks = grass_rs.Attributor(model, compressor=None, progress=False)
    h = hooks.batch_gradients(batch)
    hooks.close()
    assert "model.layers.0.mlp.down_proj" in g and g["model.layers.0.mlp.down_proj"].shape == (2, 16 * 32)
    for name, v in g.items():
        torch.testing.assert_close(v, h[name], rtol=1e-4, atol=1e-6)
