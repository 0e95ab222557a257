import torch

from posttrain.models import build_char_tokenizer
from posttrain.models.forward import IGNORE_INDEX
from posttrain.processors import SFTCollator, TextProcessor, left_pad, pack


def test_labels_cover_only_response_and_eos():
    tok = build_char_tokenizer()
    enc = TextProcessor(tok, max_length=64)
    batch = SFTCollator(enc)([{"prompt": "1+2=", "response": "3", "index": 0},
                              {"prompt": "10+20=", "response": "30", "index": 1}])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == (2, 1 + 6 + 2 + 1)
    assert tok.decode(ids[0][mask[0].bool()]) == "<bos>1+2=3<eos>"
    assert labels[0].tolist() == [IGNORE_INDEX] * 5 + tok("3").input_ids + [tok.eos_token_id] + [IGNORE_INDEX] * 3
    assert batch["prompt_lengths"].tolist() == [5, 7]
    assert batch["index"].tolist() == [0, 1]


def test_truncation_drops_prompt_from_the_left_first():
    packed = pack([[1, 2, 3, 4, 5]], [[6, 7]], pad_id=0, max_length=4)
    assert packed["input_ids"].tolist() == [[4, 5, 6, 7]]
    assert packed["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 6, 7]]


def test_left_pad_puts_last_prompt_token_in_last_column():
    out = left_pad([[1, 5], [1, 5, 6, 7]], pad_id=0)
    assert out["prompt_input_ids"].tolist() == [[0, 0, 1, 5], [1, 5, 6, 7]]
    assert torch.equal(out["prompt_attention_mask"], torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
