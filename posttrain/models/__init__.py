from posttrain.models.builders import from_pretrained, save, tiny_llama
from posttrain.models.tokenizer import build_char_tokenizer

__all__ = ["build_char_tokenizer", "from_pretrained", "save", "tiny_llama"]
