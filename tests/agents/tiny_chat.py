"""A tiny saved chat model (random-init Llama over the character tokenizer, with a chat template) for tests."""
from posttrain.models import tiny_llama
from posttrain.models.builders import save

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def save_tiny_chat_model(directory, chat_template: str | None = TEMPLATE, max_positions: int = 256) -> str:
    model, tokenizer = tiny_llama(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                  max_position_embeddings=max_positions)
    if chat_template:
        tokenizer.chat_template = chat_template
    save(model, tokenizer, str(directory))
    return str(directory)
