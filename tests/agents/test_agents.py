"""The chat interface: a local HF chat model, an OpenAI-compatible endpoint (a stub server started here) and
scripted agents give one reply per conversation, count tokens, and record failures instead of raising."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from omegaconf import OmegaConf

from posttrain.agents import ChatReply, HFChatModel, OpenAIChatModel, ScriptedChatModel, build_agent
from posttrain.utils.config import ConfigError
from tests.agents.tiny_chat import save_tiny_chat_model
from tests.helpers import compose_config

CONVERSATIONS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                 [{"role": "user", "content": "a longer question here"}]]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    return save_tiny_chat_model(tmp_path_factory.mktemp("chat"))


def test_hf_chat_batches_seeds_and_counts(chat_dir):
    agent = HFChatModel(chat_dir, batch_size=1)
    replies = agent.chat(CONVERSATIONS, max_new_tokens=6, temperature=1.0, seed=3)
    assert len(replies) == 2 and all(isinstance(r, ChatReply) and r.error is None for r in replies)
    template = agent.tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    assert template.endswith("<assistant>") and replies[0].prompt_tokens == len(template)  # one token per character
    assert all(1 <= r.completion_tokens <= 6 for r in replies)
    again = agent.chat(CONVERSATIONS, max_new_tokens=6, temperature=1.0, seed=3)
    assert [r.text for r in again] == [r.text for r in replies]
    assert agent.usage.calls == 4 and agent.usage.errors == 0
    assert agent.usage.completion_tokens == 2 * sum(r.completion_tokens for r in replies)
    greedy = agent.chat(CONVERSATIONS[:1], max_new_tokens=6)[0].text
    stopped = agent.chat(CONVERSATIONS[:1], max_new_tokens=6, stop=[greedy[2:4]])[0].text
    assert stopped == greedy[: greedy.find(greedy[2:4])]


def test_hf_long_prompt_is_cut_to_the_context(tmp_path):
    agent = HFChatModel(save_tiny_chat_model(tmp_path, max_positions=64))
    reply = agent.chat([[{"role": "user", "content": "x" * 500}]], max_new_tokens=8)[0]
    assert reply.error is None and reply.prompt_tokens == 56 and agent.truncated == 1


def test_hf_without_chat_template_names_the_key(tmp_path):
    directory = save_tiny_chat_model(tmp_path, chat_template=None)
    with pytest.raises(ConfigError, match=r"^agent\.name_or_path: .*no chat template"):
        HFChatModel(directory)
    assert HFChatModel(directory, chat_template="{{ messages[0]['content'] }}").chat(
        CONVERSATIONS[:1], max_new_tokens=2)[0].error is None


class Stub(BaseHTTPRequestHandler):
    """/v1/chat/completions: replies "echo: <last user message>"; a message "fail" gets a 500, "empty" no content."""

    def do_POST(self):  # noqa: N802 (the http.server name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        last = body["messages"][-1]["content"]
        if self.path != "/v1/chat/completions" or last == "fail":
            self.send_response(500)
            self.end_headers()
            return
        content = None if last == "empty" else f"echo: {last} STOP tail"
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": content}}],
                 "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_openai_endpoint_replies_and_records_failures(server):
    agent = OpenAIChatModel(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="m", max_retries=1,
                            timeout=5)
    conversations = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "fail"}],
                     [{"role": "user", "content": "empty"}]]
    replies = agent.chat(conversations, max_new_tokens=5, temperature=0.5, seed=11, stop=[" STOP"])
    assert replies[0] == ChatReply("echo: hello", 7, 3, None)
    assert replies[1].error is not None and "500" in replies[1].error and replies[1].text == ""
    assert replies[2].error is not None and "content" in replies[2].error
    assert agent.usage.as_dict() == {"prompt_tokens": 14, "completion_tokens": 6, "calls": 3, "errors": 2}
    fails = [r for r in server.requests if r["messages"][-1]["content"] == "fail"]
    assert len(fails) == 2  # one retry
    hello = next(r for r in server.requests if r["messages"][-1]["content"] == "hello")
    assert hello["max_tokens"] == 5 and hello["temperature"] == 0.5 and hello["seed"] == 11
    assert hello["stop"] == [" STOP"]


def test_unreachable_endpoint_names_the_key(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    agent = OpenAIChatModel(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout=2)
    with pytest.raises(ConfigError, match=r"^agent\.base_url: cannot reach"):
        agent.chat(CONVERSATIONS, max_new_tokens=4)


def test_scripted_agent_is_seeded_and_records_errors():
    def respond(messages, rng):
        if messages[-1]["content"] == "bad":
            raise ValueError("cannot parse")
        return f"{rng.random():.6f} words here\nSTOP more"

    agent = ScriptedChatModel(respond, seed=0)
    conversations = [[{"role": "user", "content": "ok"}], [{"role": "user", "content": "bad"}]]
    first = agent.chat(conversations, max_new_tokens=2, stop=["STOP"])
    assert first[0].text.endswith("words") and first[0].completion_tokens == 2
    assert first[1].error == "scripted agent failed: cannot parse" and agent.usage.errors == 1
    assert agent.chat(conversations[:1], max_new_tokens=2, stop=["STOP"])[0].text == first[0].text
    assert agent.chat(conversations[:1], max_new_tokens=2, seed=5)[0].text != first[0].text
    with pytest.raises(ConfigError, match=r"^agent\.responder"):
        ScriptedChatModel()


def test_agent_configs_build(chat_dir, tmp_path):
    cfg = compose_config(["agent=hf", f"agent.name_or_path={chat_dir}"], tmp_path)
    assert isinstance(build_agent(cfg.agent), HFChatModel)
    with pytest.raises(ConfigError, match=r"^agent\.name_or_path"):
        build_agent(compose_config(["agent=hf"], tmp_path).agent)
    with pytest.raises(ConfigError, match=r"^agent\.base_url"):
        build_agent(compose_config(["agent=openai", "agent.model=m"], tmp_path).agent)
    with pytest.raises(ConfigError, match=r"^agent\.responder"):
        build_agent(compose_config(["agent=scripted"], tmp_path).agent)
    with pytest.raises(ConfigError, match=r"^agent: no agent"):
        build_agent(compose_config([], tmp_path).get("agent"))
    assert build_agent(OmegaConf.create({"_target_": "posttrain.agents.ScriptedChatModel",
                                         "responder": {"_target_": "builtins.dict"}})).responder == {}
