"""Chat templates: render a conversation into text segments, each marked trainable or not.

Labels come from these segments: only assistant replies (and the template's end-of-turn
token) are trainable. Rendering for generation stops at the assistant prefix. One small
function per template; TEMPLATES maps exact names to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vlmsweep import IMAGE_MARKER
from vlmsweep.config.errors import lookup

Segment = tuple[str, bool]  # (text, trainable)
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


class TemplateError(ValueError):
    """The conversation can't be rendered with this template (counted as a skipped sample)."""


@dataclass(frozen=True)
class SpecialTokens:
    bos: str | None
    eos: str


@dataclass(frozen=True)
class Template:
    render_turns: Callable[[str | None, list[tuple[str, str]], SpecialTokens, bool], list[Segment]]
    # the token that ends an assistant turn: generation stops there
    stop: Callable[[SpecialTokens], str]


def _split(conversation: list[dict]) -> tuple[str | None, list[tuple[str, str]]]:
    """(system text, [(user, assistant), ...]); the last pair's assistant may be '' for prompting."""
    system, pairs, pending = None, [], None
    for i, turn in enumerate(conversation):
        role, text = turn["role"], turn["text"]
        if role == "system":
            if i != 0:
                raise TemplateError("a system turn may only come first")
            system = text
        elif role == "user":
            if pending is not None:
                raise TemplateError("two user turns in a row")
            pending = text
        elif role == "assistant":
            if pending is None:
                raise TemplateError("an assistant turn without a user turn before it")
            pairs.append((pending, text))
            pending = None
        else:
            raise TemplateError(f"unknown role {role!r}")
    if pending is not None:
        pairs.append((pending, ""))
    return system, pairs


def _chat(prefix: Callable, user: Callable, reply_end: Callable, sep: str = "") -> Callable:
    """Build a turn renderer from three small pieces shared by every chat template."""
    def render(system, pairs, tok: SpecialTokens, for_generation: bool) -> list[Segment]:
        segments: list[Segment] = [(prefix(system, tok), False)]
        for i, (question, answer) in enumerate(pairs):
            last = i == len(pairs) - 1
            segments.append((user(question, tok, i), False))
            if last and for_generation:
                break
            segments.append((answer + reply_end(tok), True))
            segments.append((sep, False))
        return [s for s in segments if s[0]]
    return render


def _plain(system, pairs, tok: SpecialTokens, for_generation: bool) -> list[Segment]:
    """LLaVA's caption pretraining: the images, then the caption; no instructions."""
    if len(pairs) != 1:
        raise TemplateError(f"the plain template takes one user/assistant pair, got {len(pairs)}")
    question, caption = pairs[0]
    images = IMAGE_MARKER * question.count(IMAGE_MARKER)
    if for_generation:
        return [(images, False)]
    return [(images, False), (caption + tok.eos, True)]


TEMPLATES: dict[str, Template] = {
    "plain": Template(_plain, lambda t: t.eos),
    # TinyLLaVA / LLaVA v1: "SYSTEM USER: q ASSISTANT: a</s>USER: ..."
    "vicuna": Template(_chat(lambda s, t: (t.bos or "") + (s or VICUNA_SYSTEM) + " ",
                             lambda q, t, i: f"USER: {q} ASSISTANT: ",
                             lambda t: t.eos), lambda t: t.eos),
    "chatml": Template(_chat(lambda s, t: f"<|im_start|>system\n{s or 'You are a helpful assistant.'}<|im_end|>\n",
                             lambda q, t, i: f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
                             lambda t: "<|im_end|>", sep="\n"), lambda t: "<|im_end|>"),
    # Gemma and Mistral have no system role: a system text goes before the first user turn
    "gemma": Template(_chat(lambda s, t: (t.bos or "") + (f"{s}\n\n" if s else ""),
                            lambda q, t, i: f"<start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n",
                            lambda t: "<end_of_turn>", sep="\n"), lambda t: "<end_of_turn>"),
    # Prismatic's "pure" prompt for base (not chat-tuned) LLMs such as Llama-2: "In: q\nOut: a</s>"
    "pure": Template(_chat(lambda s, t: (t.bos or "") + (f"{s}\n" if s else ""),
                           lambda q, t, i: f"In: {q}\nOut: ",
                           lambda t: t.eos), lambda t: t.eos),
    "mistral": Template(_chat(lambda s, t: (t.bos or "") + (f"{s}\n\n" if s else ""),
                              lambda q, t, i: f"[INST] {q} [/INST]",
                              lambda t: t.eos), lambda t: t.eos),
}


def get_template(name: str) -> Template:
    return lookup(TEMPLATES, "template", name, field="model.llm.template")


def render(template: str, conversation: list[dict], tokens: SpecialTokens, for_generation: bool = False) -> list[Segment]:
    system, pairs = _split(conversation)
    if not pairs:
        raise TemplateError("no user turn")
    if not for_generation and any(not answer.strip() for _, answer in pairs):
        raise TemplateError("an empty or missing assistant turn")
    return get_template(template).render_turns(system, pairs, tokens, for_generation)
