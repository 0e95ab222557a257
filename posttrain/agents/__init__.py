"""Chat models behind one interface (`ChatModel.chat`): a local HF model (`HFChatModel`), an OpenAI-compatible
endpoint (`OpenAIChatModel`), rule-based agents (`ScriptedChatModel` + a world's `Responder`). `build_agent`
turns an `agent` config (conf/agent/) into one."""
from posttrain.agents.base import ChatModel, ChatReply, Usage, cut_at_stop
from posttrain.agents.builder import build_agent
from posttrain.agents.endpoint import OpenAIChatModel
from posttrain.agents.hf import HFChatModel
from posttrain.agents.scripted import Responder, ScriptedChatModel

__all__ = ["ChatModel", "ChatReply", "HFChatModel", "OpenAIChatModel", "Responder", "ScriptedChatModel", "Usage",
           "build_agent", "cut_at_stop"]
