"""Processors: examples -> model inputs. `TextProcessor` for text models, `VisionProcessor` for image+text models."""
from posttrain.processors.collate import PairCollator, SFTCollator, make_processor
from posttrain.processors.images import ImageInputs
from posttrain.processors.text import TextProcessor, left_pad, pack
from posttrain.processors.vision import HFImageTokens, QwenImageTokens, VisionProcessor

__all__ = ["HFImageTokens", "ImageInputs", "PairCollator", "QwenImageTokens", "SFTCollator", "TextProcessor",
           "VisionProcessor", "left_pad", "make_processor", "pack"]
