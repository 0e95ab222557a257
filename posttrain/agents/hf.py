"""A local Hugging Face chat model as an agent, generating through posttrain's own sampler
(`posttrain.generation.generate`): chat template applied, conversations batched (left-padded), seeded."""
from __future__ import annotations

import torch

from posttrain.agents.base import ChatModel, ChatReply, cut_at_stop
from posttrain.generation import generate
from posttrain.models.builders import from_pretrained
from posttrain.processors.text import left_pad
from posttrain.utils.config import ConfigError, check


class HFChatModel(ChatModel):
    """Args:
        name_or_path: a model directory (or Hub id when online) with a tokenizer that has a chat template.
        model, tokenizer: an already loaded pair instead of `name_or_path` (e.g. the model a stage trains).
        chat_template: a Jinja chat template to use instead of (or where there is no) the tokenizer's own.
        batch_size: conversations per forward batch.
        dtype: the weights' dtype when loading.
        device: where the model runs ("cpu", "cuda", ...).
        key: the config key named in errors (the model's origin).
    """

    def __init__(self, name_or_path: str | None = None, model=None, tokenizer=None, chat_template: str | None = None,
                 batch_size: int = 8, dtype: str = "float32", device: str = "cpu", key: str = "agent.name_or_path"):
        super().__init__()
        check(batch_size >= 1, "agent.batch_size", f"must be >= 1, got {batch_size}")
        if model is None:
            if not name_or_path:
                raise ConfigError(f"{key}: required for agent=hf (a local chat model directory)")
            model, tokenizer = from_pretrained(name_or_path, dtype=dtype)
        if chat_template:
            tokenizer.chat_template = chat_template
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"{key}: the tokenizer of {name_or_path or type(model).__name__} has no chat template "
                              f"(a chat/instruct model is needed, or set agent.chat_template)")
        self.name = name_or_path or type(model).__name__
        self.model, self.tokenizer = model.to(device), tokenizer
        self.batch_size, self.device = batch_size, device
        self.context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.truncated = 0  # prompts cut from the left to fit the context

    def describe(self) -> dict:
        return {**super().describe(), "model": self.name, "chat_template": self.tokenizer.chat_template}

    def encode(self, messages: list[dict], max_new_tokens: int) -> list[int]:
        """The conversation through the chat template, ready for the assistant's turn; when it does not fit the
        context with `max_new_tokens` after it, its oldest tokens are dropped (and counted in `truncated`)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = max(self.context - max_new_tokens, 1)
        if len(ids) > room:
            self.truncated += 1
            ids = ids[-room:]
        return ids

    def _chat(self, conversations, *, max_new_tokens, temperature, seed, stop):
        max_new_tokens = min(max_new_tokens, max(self.context - 1, 1))
        replies = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start:start + self.batch_size]
            prompts = [self.encode(messages, max_new_tokens) for messages in chunk]
            generator = torch.Generator(device=self.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed * 1_000_003 + start)
            replies += self._generate(prompts, max_new_tokens, temperature, generator, stop)
        return replies

    def _generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float,
                  generator: torch.Generator, stop: list[str] | None) -> list[ChatReply]:
        pad = self.tokenizer.pad_token_id
        batch = left_pad(prompts, pad)
        try:
            out = generate(self.model, batch["prompt_input_ids"].to(self.device),
                           batch["prompt_attention_mask"].to(self.device), max_new_tokens=max_new_tokens,
                           eos_token_id=self.tokenizer.eos_token_id, pad_token_id=pad, temperature=temperature,
                           generator=generator)
        except RuntimeError as error:  # e.g. out of memory: every conversation of the batch fails, the run goes on
            return [ChatReply("", len(p), 0, f"generation failed: {error}") for p in prompts]
        tokens = out.token_lists()
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return [ChatReply(cut_at_stop(text, stop), len(p), len(t), None if t else "empty reply")
                for p, t, text in zip(prompts, tokens, texts)]
