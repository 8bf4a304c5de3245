"""Ray Data tokenises with the `tokenizers` library alone (no transformers import); the ids must
be exactly AutoTokenizer's, or training would see other inputs than serving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.tasks.text_classification import tokenizer as loop
from ml.tasks.text_classification.model import check_base_model, resolve_base_model
from ml.train.model import ModelError

EDGE_CASES = [
    "",
    "   ",
    "\t\n",
    "Ünïcödé naïve café",
    "中文字符 mixed with English",
    "emoji 😀 and symbols ©®™",
    "word " * 400,  # far over any max_length: truncated
    "[CLS] [SEP] [PAD] literal special tokens",
]


@pytest.fixture(scope="module")
def packaged() -> Path:
    return Path(resolve_base_model("all-minilm-l6-v2"))


def real_texts(shared_data: Path) -> list[str]:
    from ml.data.text import combine_text

    madewithml = pd.read_csv(shared_data / "madewithml" / "dataset.csv")
    medical = pd.read_csv(shared_data / "medical-abstracts" / "train.csv").head(500)
    return [
        *combine_text(madewithml, ["title", "description"]).tolist(),
        *combine_text(medical, ["title", "description"]).tolist(),  # long abstracts
        *EDGE_CASES,
    ]


@pytest.mark.parametrize("max_length", [16, 64, 128])
def test_tokenizer_file_gives_autotokenizer_ids(shared_data, packaged, max_length):
    from transformers import AutoTokenizer

    fast = loop.load_tokenizer(str(packaged))
    assert isinstance(fast, loop.TokenizerFile)
    reference = AutoTokenizer.from_pretrained(str(packaged))
    texts = real_texts(shared_data)
    ours = loop.tokenize(fast, texts, max_length)
    theirs = loop.tokenize(reference, texts, max_length)
    assert ours["input_ids"].shape == (len(texts), max_length)
    for column in loop.TOKEN_COLUMNS:
        np.testing.assert_array_equal(ours[column], theirs[column], err_msg=column)
    # Long texts really were truncated, short ones padded: the comparison covered both.
    lengths = ours["attention_mask"].sum(axis=1)
    assert lengths.max() == max_length and lengths.min() < max_length


def test_other_tokenizers_go_through_autotokenizer(tmp_path, packaged):
    folder = tmp_path / "model"
    shutil.copytree(packaged, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert not isinstance(loop.load_tokenizer(str(folder)), loop.TokenizerFile)


def test_base_model_check_reads_config_of_local_folders(tmp_path, packaged):
    assert check_base_model("all-minilm-l6-v2") == str(packaged)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"no readable config\.json"):
        check_base_model(str(empty))
    (empty / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ModelError, match="names no model_type"):
        check_base_model(str(empty))


def test_base_model_check_of_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="cannot load base model 'no-such-org/no-such-model'"):
        check_base_model("no-such-org/no-such-model")
