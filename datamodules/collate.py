"""Re-exports of `posttrain.processors`, where tokenisation, padding and collation live."""
from posttrain.models.forward import IGNORE_INDEX
from posttrain.processors import PairCollator, SFTCollator, TextProcessor, left_pad, make_processor, pack

Encoder = TextProcessor  # the text processor's former name

__all__ = ["IGNORE_INDEX", "Encoder", "PairCollator", "SFTCollator", "TextProcessor", "left_pad", "make_processor",
           "pack"]
