"""HF models in the Python API: dict batches, padding on either side, per-sequence summed losses."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import grass_rs
from grass_rs import hf
from grass_rs.capture.compressors import PerLayerProjectors


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64, bos_token_id=1,
                         eos_token_id=1)  # fmt: skip
        return GPT2LMHeadModel(cfg).eval()
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=64, max_position_embeddings=64, bos_token_id=1,
                      eos_token_id=1)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _seqs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(2, 64, (n,), generator=g) for n in (5, 11, 3, 8)]


def _pad(seqs: list[torch.Tensor], side: str, labels: bool = False) -> dict[str, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(t - len(s), t)
        ids[i, sl], mask[i, sl] = s, 1
    out = {"input_ids": ids, "attention_mask": mask}
    if labels:
        out["labels"] = ids.masked_fill(mask == 0, -100)
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_dict_batch_gradients_equal_one_sequence_at_a_time(kind: str, side: str) -> None:
    model = _model(kind)
    att = grass_rs.Attributor(model, k=16)  # the HF model as is: default FactGraSS, summed LM loss
    seqs = _seqs()
    batched = att.gradients([_pad(seqs, side, labels=True)])
    alone = att.gradients([{"input_ids": s[None]} for s in seqs])
    assert list(batched) == list(alone) and len(batched) >= 8
    for name in batched:
        scale = float(alone[name].abs().max()) or 1.0
        assert float((batched[name] - alone[name]).abs().max()) <= 2e-5 * scale, name


def test_summed_loss_scale_is_per_sequence() -> None:
    """Raw per-sample gradients of a padded batch are ∇ of each sequence's own *summed* loss."""
    model = _model("llama")
    layer = "model.layers.1.mlp.down_proj"
    att = grass_rs.Attributor(model, compressor=None, layers=[layer])
    seqs = _seqs()
    got = att.gradients([_pad(seqs, "left")])[layer]
    w = dict(model.named_modules())[layer].weight
    for i, s in enumerate(seqs):
        logits = model(input_ids=s[None]).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, s[1:], reduction="sum")  # Σ over its tokens
        (ref,) = torch.autograd.grad(loss, w)
        torch.testing.assert_close(got[i], ref.reshape(-1), rtol=1e-4, atol=1e-6)
    # the summed loss of a batch is the sum of each sequence's loss alone
    per = hf.per_sequence_causal_lm_loss(hf.forward(model, _pad(seqs, "right")), _pad(seqs, "right"))
    alone = torch.stack([hf.causal_lm_loss(model(input_ids=s[None]), {"input_ids": s[None]}) for s in seqs])
    torch.testing.assert_close(per, alone, rtol=1e-5, atol=1e-5)


def test_completion_only_labels_ignore_the_prompt() -> None:
    model = _model("gpt2")
    s = _seqs()[1]
    labels = s.clone()
    labels[:6] = -100
    out = model(input_ids=s[None])
    want = torch.nn.functional.cross_entropy(out.logits[0, 5:-1], s[6:], reduction="sum")
    torch.testing.assert_close(hf.causal_lm_loss(out, {"input_ids": s[None], "labels": labels[None]}), want)


def test_position_ids_from_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert hf.position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 0]]
    batch = {**_pad(_seqs(), "left"), "index": torch.arange(4), "text": ["x"] * 4, "labels": torch.zeros(4)}
    kwargs = hf.model_inputs(_model("gpt2"), batch)
    assert sorted(kwargs) == ["attention_mask", "input_ids", "position_ids"]


def test_hf_token_mean_loss_is_refused_with_a_clear_error() -> None:
    model = _model("gpt2")
    batch = _pad(_seqs(), "right", labels=True)
    with hf.attach(model, grass_rs.FactGraSS(16), loss_reduction="mean") as h:
        with pytest.raises(hf.TokenMeanLossError, match="token mean"):
            model(**batch)
        hf.causal_lm_loss(hf.forward(model, batch), batch).backward()  # the right way works
    assert h.flat().shape[0] == 4
    assert model(**batch).loss is not None  # the guard is gone with the handle


def test_token_mean_reweights_samples_which_is_why_it_is_refused() -> None:
    """HF's labels= loss under loss_reduction='mean' scales sample b by B / N_batch, not 1."""
    model = _model("llama")
    layer = "model.layers.1.mlp.down_proj"
    seqs = _seqs()
    batch = _pad(seqs, "right", labels=True)
    with grass_rs.attach(model, PerLayerProjectors(None), layers=[layer], loss_reduction="mean") as h:
        model(**batch).loss.backward()
    mean_style = h.gradients()[layer]
    summed = grass_rs.Attributor(model, compressor=None, layers=[layer]).gradients([batch])[layer]
    ratio = mean_style.norm(dim=1) / summed.norm(dim=1)
    n_tokens = sum(len(s) - 1 for s in seqs)
    torch.testing.assert_close(ratio, torch.full((4,), 4 / n_tokens), rtol=1e-3, atol=0)


def test_loss_fn_returning_hf_loss_is_a_clear_type_error() -> None:
    model = _model("gpt2")
    att = grass_rs.Attributor(model, k=16, loss_fn=lambda out, batch: out.loss)
    with pytest.raises(grass_rs.ArgumentTypeError, match="causal_lm_loss"):
        att.gradients([_pad(_seqs(), "right", labels=True)])


def test_sequence_classification_dict_batches() -> None:
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=64, num_labels=3, pad_token_id=0
    )
    model = GPT2ForSequenceClassification(cfg).eval()
    assert hf.default_loss(model) is hf.sequence_classification_loss
    seqs = _seqs()
    labels = torch.tensor([0, 2, 1, 2])
    att = grass_rs.Attributor(model, k=16)
    batched = att.gradients([{**_pad(seqs, "right"), "labels": labels}])
    alone = att.gradients([{"input_ids": s[None], "labels": labels[i : i + 1]} for i, s in enumerate(seqs)])
    for name in batched:
        scale = float(alone[name].abs().max()) or 1.0
        assert float((batched[name] - alone[name]).abs().max()) <= 2e-5 * scale, name


def test_default_loss_needs_an_hf_model() -> None:
    with pytest.raises(grass_rs.InvalidArgumentError, match="not a Hugging Face model"):
        hf.default_loss(torch.nn.Linear(2, 2))
    assert not hf.is_hf_model(torch.nn.Linear(2, 2))
