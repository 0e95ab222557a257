"""Rewards a method is given, `reward(example, completion) -> Verdict`: verifiers and their answer parsers."""
from posttrain.rewards.parsing import answers_match, normalize_answer, normalize_number, parse_boxed, parse_hash_answer
from posttrain.rewards.verifiers import ArithmeticVerifier, BoxedVerifier, ExactMatchVerifier, GSM8KVerifier, Verdict

__all__ = ["ArithmeticVerifier", "BoxedVerifier", "ExactMatchVerifier", "GSM8KVerifier", "Verdict", "answers_match",
           "normalize_answer", "normalize_number", "parse_boxed", "parse_hash_answer"]
