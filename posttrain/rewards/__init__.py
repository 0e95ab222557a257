"""Verifiers (binary rewards) and the answer parsers behind them."""
from posttrain.rewards.exact import ExactAnswerVerifier, normalize_answer
from posttrain.rewards.parsing import answers_match, normalize_number, parse_boxed, parse_hash_answer
from posttrain.rewards.verifiers import ArithmeticVerifier, BoxedVerifier, GSM8KVerifier, Verdict

__all__ = ["ArithmeticVerifier", "BoxedVerifier", "ExactAnswerVerifier", "GSM8KVerifier", "Verdict", "answers_match",
           "normalize_answer", "normalize_number", "parse_boxed", "parse_hash_answer"]
