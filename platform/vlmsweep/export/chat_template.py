"""vlmsweep's chat templates (models/templates.py) as Jinja, for a Hugging Face processor.

`processor.apply_chat_template(messages, add_generation_prompt=True)` renders the text
vlmsweep's `prompt_ids` tokenizes for generation: the same system text, turn markers, and
the reply's leading space left to the model (training gives it to the reply). The family's
special tokens are written into the template as literals, so it never depends on which
special tokens a tokenizer happens to expose to Jinja.

A message's content is a string (taken as it is, `<image>` markers included) or a list of
parts: the images first, one `<image>` each, then a newline and the texts (joined by
newlines) — how vlmsweep's data and evaluation write a user turn ("<image>\\nQuestion").
"""

from __future__ import annotations

import json

from vlmsweep import IMAGE_MARKER
from vlmsweep.models.templates import VICUNA_SYSTEM, SpecialTokens


def _lit(text: str) -> str:
    """A Jinja expression that outputs `text` verbatim."""
    return "{{ " + json.dumps(text) + " }}"


_TEXT = ("{%- macro text(m) -%}{%- if m['content'] is string -%}{{ m['content'] }}{%- else -%}"
         "{%- set n = m['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
         "{%- set t = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') -%}"
         "{{ '" + IMAGE_MARKER + "' * n }}{{ '\\n' if n and t else '' }}{{ t }}"
         "{%- endif -%}{%- endmacro -%}")
_COUNT = ("{%- macro images(m) -%}{%- if m['content'] is string -%}{{ m['content'].count('" + IMAGE_MARKER + "') }}"
          "{%- else -%}{{ m['content'] | selectattr('type', 'equalto', 'image') | list | length }}"
          "{%- endif -%}{%- endmacro -%}")
_SYSTEM = "{%- set system = text(messages[0]) if messages[0]['role'] == 'system' else '' -%}"


def _chat(prefix: str, user: tuple[str, str], assistant: tuple[str, str], generation: str) -> str:
    """Template text: `prefix` (may use `system`), then each turn wrapped in its (before, after)."""
    turns = ("{%- for m in messages -%}"
             "{%- if m['role'] == 'user' -%}" + _lit(user[0]) + "{{ text(m) }}" + _lit(user[1]) +
             "{%- elif m['role'] == 'assistant' -%}" + _lit(assistant[0]) + "{{ text(m) }}" + _lit(assistant[1]) +
             "{%- endif -%}{%- endfor -%}")
    return _TEXT + _SYSTEM + prefix + turns + "{%- if add_generation_prompt -%}" + _lit(generation) + "{%- endif -%}"


def _system_or(default: str) -> str:
    return "{{ system if system else " + json.dumps(default) + " }}"


def _system_paragraph() -> str:  # Gemma and Mistral have no system role: it leads the first turn
    return "{%- if system -%}{{ system }}" + _lit("\n\n") + "{%- endif -%}"


def jinja_template(name: str, tokens: SpecialTokens) -> str:
    """The Jinja chat template equal to vlmsweep's template `name` for a tokenizer's tokens."""
    bos, eos = _lit(tokens.bos or ""), tokens.eos
    if name == "vicuna":
        return _chat(bos + _system_or(VICUNA_SYSTEM) + _lit(" "), ("USER: ", " "), ("ASSISTANT: ", eos),
                     "ASSISTANT:")
    if name == "chatml":
        return _chat(_lit("<|im_start|>system\n") + _system_or("You are a helpful assistant.") + _lit("<|im_end|>\n"),
                     ("<|im_start|>user\n", "<|im_end|>\n"), ("<|im_start|>assistant\n", "<|im_end|>\n"),
                     "<|im_start|>assistant\n")
    if name == "gemma":
        return _chat(bos + _system_paragraph(), ("<start_of_turn>user\n", "<end_of_turn>\n"),
                     ("<start_of_turn>model\n", "<end_of_turn>\n"), "<start_of_turn>model\n")
    if name == "mistral":
        return _chat(bos + _system_paragraph(), ("[INST] ", " [/INST]"), ("", eos), "")
    if name == "plain":
        # LLaVA's caption pretraining: a user turn is its images only, the reply the caption
        return (_COUNT + "{%- for m in messages -%}"
                "{%- if m['role'] == 'user' -%}{{ '" + IMAGE_MARKER + "' * (images(m) | int) }}"
                "{%- elif m['role'] == 'assistant' -%}{{ m['content'] if m['content'] is string else "
                "m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') }}"
                + _lit(eos) + "{%- endif -%}{%- endfor -%}")
    raise KeyError(f"no Jinja form of template {name!r}")
