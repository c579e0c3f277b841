"""Loading corpora through `datasets`: JSONL/CSV/Parquet/save_to_disk, fields, truncation, batching."""

from __future__ import annotations

from pathlib import Path

import pytest

import grass_rs
from grass_rs.data import hf as hfdata

pytest.importorskip("datasets")

import hfmodels


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return hfmodels.tokenizer(hfmodels.texts(100))


def _write_all(tmp: Path, rows: list[dict]) -> list[Path]:  # type: ignore[type-arg]
    import datasets

    ds = datasets.Dataset.from_list(rows)
    hfmodels.write_jsonl(tmp / "d.jsonl", rows)
    ds.to_csv(str(tmp / "d.csv"), index=False)
    ds.to_parquet(str(tmp / "d.parquet"))
    ds.save_to_disk(str(tmp / "saved"))
    return [tmp / "d.jsonl", tmp / "d.csv", tmp / "d.parquet", tmp / "saved"]


def test_every_local_format_gives_the_same_corpus(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    texts = hfmodels.texts(12)
    corpora = [
        hfdata.load_corpus(p, tok, max_length=8) for p in _write_all(tmp_path, [{"text": t} for t in texts])
    ]
    for c in corpora:
        assert c.texts == texts
        assert c.input_ids == corpora[0].input_ids and c.labels == c.input_ids
        assert max(c.lengths) == 8  # truncated
    assert corpora[0].fingerprint() == corpora[-1].fingerprint()


def test_prompt_completion_puts_the_loss_on_the_completion(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    rows = [{"prompt": "the cat sees", "completion": "a big dog"}, {"prompt": "a bird", "completion": "runs"}]
    c = hfdata.load_corpus(hfmodels.write_jsonl(tmp_path / "pc.jsonl", rows), tok)
    assert c.meta["prompt_field"] == "prompt"
    assert c.labels[0] == [-100] * 3 + c.input_ids[0][3:] and len(c.input_ids[0]) == 6
    assert c.labels[1] == [-100, -100, c.input_ids[1][2]]
    batch = c.collate([0, 1], padding_side="left")
    assert batch["labels"][1].tolist() == [-100] * 5 + [c.input_ids[1][2]]
    assert batch["attention_mask"][1].tolist() == [0, 0, 0, 1, 1, 1]


def test_length_batches_are_deterministic_and_grouped() -> None:
    lengths = [5, 1, 9, 3, 5, 2, 8]
    batches = hfdata.length_batches(lengths, 3)
    assert batches == [[1, 5, 3], [0, 4, 6], [2]]
    assert sorted(i for b in batches for i in b) == list(range(7))


def test_clear_errors(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    p = hfmodels.write_jsonl(tmp_path / "x.jsonl", [{"body": "the cat"}])
    with pytest.raises(grass_rs.InvalidArgumentError, match="no `text` column"):
        hfdata.load_corpus(p, tok)
    with pytest.raises(grass_rs.InvalidArgumentError, match="not a column"):
        hfdata.load_corpus(p, tok, text_field="nope")
    with pytest.raises(grass_rs.InvalidArgumentError, match="does not exist"):
        hfdata.load_corpus(tmp_path / "missing.jsonl", tok)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(grass_rs.InvalidArgumentError, match="unknown data file type"):
        hfdata.load_corpus(tmp_path / "x.txt", tok)
    with pytest.raises(grass_rs.InvalidArgumentError, match="both"):
        hfdata.load_corpus(p, tok, prompt_field="body")
    with pytest.raises(grass_rs.InvalidArgumentError, match="max_length"):
        hfdata.load_corpus(p, tok, text_field="body", max_length=1)
    with pytest.raises(grass_rs.InvalidArgumentError, match="pip install"):
        hfdata.require("surely_not_a_module_grass_rs")


def test_long_prompts_are_cut_from_the_left_and_empty_completions_skipped(tok) -> None:  # type: ignore[no-untyped-def]
    prompt = " ".join(hfmodels.texts(3, seed=9, lo=10, hi=12))  # ≥ 30 tokens
    rows = [
        {"prompt": prompt, "completion": "the cat sees a dog"},
        {"prompt": "a bird", "completion": ""},
        {"prompt": "", "completion": "runs"},  # one token, nothing before it: no loss
        {"prompt": prompt, "completion": " ".join(["red"] * 20)},  # longer than max_length itself
    ]
    c = hfdata.tokenize_records(rows, tok, max_length=10)
    comp = tok("the cat sees a dog", add_special_tokens=False)["input_ids"]
    p_ids = tok(prompt)["input_ids"]
    assert c.examples == [0, 3] and c.skipped == [1, 2] and len(c) == 2
    assert c.input_ids[0] == p_ids[-5:] + comp and c.labels[0] == [-100] * 5 + comp
    # the completion alone is too long: one prompt token, then the completion's first 9 tokens
    assert c.input_ids[1] == p_ids[-1:] + [tok.convert_tokens_to_ids("red")] * 9
    assert hfdata.truncate_pair([7, 2, 3, 4], [5, 6], 4, bos=7) == ([7, 4], [5, 6])  # BOS kept
    with pytest.raises(grass_rs.InvalidArgumentError, match="example 1 has no token"):
        hfdata.tokenize_records(rows, tok, max_length=10, skip_empty=False)
    with pytest.raises(grass_rs.InvalidArgumentError, match="none of the 1 examples"):
        hfdata.tokenize_records(rows[1:2], tok, max_length=10)
