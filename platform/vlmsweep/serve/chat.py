"""`vlmsweep chat CHECKPOINT [--image PATH ...]`: talk to a trained variant in the terminal.

Wired into cli.py by add_chat_parser; `python -m vlmsweep.serve.chat` runs it on its own.
"""

from __future__ import annotations

import argparse
import sys

from vlmsweep.argtypes import positive_int

from .turns import ChatError, Sampling, Turn, load_image

CHAT_HELP = """Chat with a trained variant: multi-turn, any number of images per turn, text-only turns.
CHECKPOINT is a stage output (WORK_DIR/stages/...), SWEEP/VARIANT (the variant's last training
stage, from the work dir's MLflow record), or a folder written by `vlmsweep export --format hf-llava`.
Prompts, image preprocessing and greedy decoding are evaluation's own. --image attaches images
to the first message. In the chat:
  /image PATH   attach an image to your next message (repeat for several; the rest of the line is the path)
  /reset        forget the conversation and any attached images
  /help         this list
  /quit         leave (so do /exit and Ctrl-D)
A bad or unreadable image is a one-line error and the chat goes on; at start-up (--image) it
exits with status 2. Read from a pipe (not a terminal), the chat prints only the answers and
exits with status 1 if any line failed."""

COMMANDS = "/image PATH, /reset, /help, /quit"


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number >= 0 (0 = greedy)")
    return value


def _top_p(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be in (0, 1]")
    return value


def add_chat_parser(subparsers):
    from .quantize import QUANTIZE

    p = subparsers.add_parser("chat", help="chat with a trained variant (images and text)", description=CHAT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="stage output directory, SWEEP/VARIANT, or an hf-llava export")
    p.add_argument("--image", action="extend", nargs="+", default=[], metavar="PATH",
                   help="image(s) for the first message (repeatable)")
    p.add_argument("--temperature", type=_temperature, default=0.0,
                   help="sampling temperature; 0 (default) decodes greedily, as evaluation does")
    p.add_argument("--top-p", type=_top_p, default=None, help="nucleus sampling (needs --temperature > 0)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="longest answer in tokens (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    p.add_argument("--lora", choices=("unmerged", "merged"), default=None,
                   help="LoRA adapters kept separate (default, as evaluation serves them) or merged into the weights")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="load the LLM in 4-bit NF4 or 8-bit (bitsandbytes; needs a CUDA GPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if there is one")
    p.add_argument("--work-dir", help="work dir with the presets, zoo and MLflow record (default ./.vlmsweep; "
                   "for WORK/stages/NAME, WORK)")
    p.set_defaults(fn=cmd_chat)
    return p


class Session:
    """The conversation so far and the images waiting for the next message."""

    def __init__(self, model, sampling: Sampling, pending: list | None = None):
        self.model, self.sampling = model, sampling
        self.turns: list[Turn] = []
        self.pending: list = list(pending or [])

    def ask(self, text: str) -> str:
        from vlmsweep import IMAGE_MARKER

        if IMAGE_MARKER in text:
            raise ChatError(f"a message can't contain {IMAGE_MARKER}: attach images with /image PATH")
        turn = Turn("user", text, self.pending)
        self.pending = []
        try:
            answer = self.model.reply([*self.turns, turn], self.sampling)
        except ChatError as err:
            dropped = f" (its {len(turn.images)} image(s) dropped too)" if turn.images else ""
            raise ChatError(f"{err}; the message was not sent{dropped}") from None
        self.turns += [turn, Turn("assistant", answer)]
        return answer

    def attach(self, path: str) -> int:
        self.pending.append(load_image(path))
        return len(self.pending)

    def reset(self) -> None:
        self.turns, self.pending = [], []


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def run(session: Session, interactive: bool, out=sys.stdout, err=sys.stderr) -> int:
    """Read lines until /quit or end of input; returns the exit status."""
    failed = False

    def say(text: str) -> None:
        if interactive:
            print(text, file=out, flush=True)

    def error(text: str) -> None:
        nonlocal failed
        failed = True
        print(f"error: {' '.join(str(text).split())}", file=err, flush=True)

    while True:
        try:
            line = input("user> " if interactive else "")
        except EOFError:
            say("")
            break
        except KeyboardInterrupt:
            say("")
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            if command in ("/quit", "/exit"):
                break
            if command == "/reset":
                session.reset()
                say("(conversation cleared)")
            elif command == "/help":
                say(f"commands: {COMMANDS}; type anything else to send it")
            elif command == "/image":
                path = _unquote(rest)
                if not path:
                    error("/image needs a path: /image PATH")
                    continue
                try:
                    n = session.attach(path)
                    say(f"(image {path} attached to your next message; {n} attached)")
                except ChatError as e:
                    error(e)
            else:
                error(f"unknown command {command}; commands: {COMMANDS}")
            continue
        try:
            answer = session.ask(line)
        except ChatError as e:
            error(e)
            continue
        except KeyboardInterrupt:
            say("\n(interrupted; the message was not sent)")
            continue
        print(f"assistant> {answer}" if interactive else answer, file=out, flush=True)
    return 1 if failed and not interactive else 0


def cmd_chat(args) -> int:
    import warnings

    import torch

    from vlmsweep.config.errors import InputError

    from .backends import load_chat_model
    from .quantize import check_quantize

    if args.top_p is not None and args.temperature == 0:
        raise InputError([("--top-p", "samples, so it needs --temperature > 0 (0 decodes greedily)")])
    check_quantize(args.quantize, args.device)   # before any file is read
    # library deprecation notices (transformers, peft) are for developers, not for the chat screen
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # "Loading weights" bars: the banner says what was loaded
    images = []
    for path in args.image:
        try:
            images.append(load_image(path))
        except ChatError as e:
            raise InputError([("--image", str(e))]) from None
    model = load_chat_model(args.checkpoint, args.work_dir, lora=args.lora, quantize=args.quantize,
                            device=args.device)
    torch.manual_seed(args.seed)
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p if args.top_p is not None else 1.0)
    interactive = sys.stdin.isatty()
    decoding = "greedy" if sampling.greedy else f"sampling (temperature {sampling.temperature}, top-p {sampling.top_p})"
    note = print if interactive else (lambda text: print(text, file=sys.stderr))
    note(f"vlmsweep chat: {model.description}; {decoding}, at most {sampling.max_new_tokens} new tokens")
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        note(f"commands: {COMMANDS}" + (f"; {len(images)} image(s) attached to your first message" if images else ""))
    return run(Session(model, sampling, images), interactive)


def main(argv: list[str] | None = None) -> int:
    from vlmsweep.config.errors import ConfigError

    parser = argparse.ArgumentParser(prog="vlmsweep")
    add_chat_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["chat", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
