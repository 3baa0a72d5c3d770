"""`vlmsweep zoo build`: pretrain the miniature grid's parts on the offline world.

Artifacts land in <work_root>/zoo/<name>/ as save_pretrained directories, loadable as the
checkpoint "zoo:<name>". Each holds zoo.json (its cache key and training summary) and a
model card. A directory whose key matches the current spec is reused untouched, so a
repeated build is a few file reads: no world, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from vlmsweep.models.presets import ZOO_INFO, materialize

from .card import model_card
from .spec import WORLD_IMAGE_SIZE, ZooSpec, content_key, world_identity, zoo_spec

# the shared tokenizer's own eos (CLIP's real one); LMs get their family's tokens instead
TEXT_TOWER_EOS = "<|endoftext|>"


def read_info(target: Path) -> dict | None:
    """The artifact's zoo.json when the directory is complete, else None."""
    try:
        if (target / ".complete").exists():
            return json.loads((target / ZOO_INFO).read_text())
    except (OSError, ValueError):
        pass
    return None


def _ensure(target: Path, key: str, write: Callable[[Path], dict], log) -> dict:
    """Reuse `target` if its key matches, else build it atomically with write(tmpdir) -> info."""
    info = read_info(target)
    if info and info.get("key") == key:
        return {**info, "cached": True}
    if target.exists():
        # a stale build (other spec) or a crashed non-atomic copy: move aside, then delete,
        # so materialize's rename finds the name free
        aside = target.with_name(f".stale-{target.name}-{os.getpid()}")
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    started = time.time()
    log(f"zoo: building {target.name} ...")

    def write_all(tmp: Path) -> None:
        info = {"name": target.name, "key": key, **write(tmp), "build_seconds": round(time.time() - started, 2)}
        (tmp / ZOO_INFO).write_text(json.dumps(info, indent=1))
        (tmp / "README.md").write_text(model_card(info))

    materialize(target, write_all)
    info = {**read_info(target), "cached": False}
    log(f"zoo: {target.name} done in {info['build_seconds']}s"
        + (f" (loss {info['first_loss']:.3f} -> {info['final_loss']:.3f}, {info['params']:,} params)"
           if "final_loss" in info else ""))
    return info


class _Session:
    """The expensive things a build may need, made on first use only (a cache hit needs none).
    Parts build in threads (_ensure_all): the world and the Ray cluster are made once, under a lock."""

    def __init__(self, zoo: Path, spec: ZooSpec, num_cpus: int | None, log):
        self.zoo, self.spec, self.num_cpus, self.log = zoo, spec, num_cpus, log
        self._world: Path | None = None
        self.started_ray = False
        self._lock = threading.Lock()

    def cpus(self) -> int:
        """The Ray cluster's CPUs (starting the local one this build uses, if none runs yet)."""
        import ray

        self._ray()
        return int(ray.cluster_resources().get("CPU", 1))

    def _ray(self) -> None:
        import ray

        from vlmsweep.sweep.ray_cluster import ensure_ray

        with self._lock:
            if not ray.is_initialized():
                ensure_ray(num_cpus=self.num_cpus)
                self.started_ray = True

    def world(self) -> Path:
        with self._lock:
            return self._make_world()

    def _make_world(self) -> Path:
        if self._world is None:
            from vlmsweep.data.world import build_world

            w = world_identity(self.spec)
            target = self.zoo / ".world" / f"v{w['version']}-{w['size']}-seed{w['seed']}-{w['image_size']}px"
            self.log(f"zoo: world {w} -> {target}")
            self._world = materialize(target, lambda d: build_world(d, seed=w["seed"], size=w["size"],
                                                                    image_size=WORLD_IMAGE_SIZE))
        return self._world

    def fit(self, loop, job: dict, name: str) -> dict:
        """One pretraining job as a Ray Train TorchTrainer (V2) with a single 1-CPU worker. Called
        from several threads at once: Train V2's fit() runs off the main thread as in Tune."""
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        self._ray()
        trainer = TorchTrainer(
            loop, train_loop_config=job,
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=f"zoo-{name}-{os.getpid()}-{int(time.time())}",
                                 storage_path=str(self.zoo / ".ray")))
        result = trainer.fit()
        if result.error:
            raise result.error
        if not result.return_value:
            raise RuntimeError(f"zoo job {name} returned no summary")
        return result.return_value

    def close(self) -> None:
        if self.started_ray:
            import ray

            ray.shutdown()


def _ensure_all(builds: list[tuple], session: _Session, log) -> dict[str, dict]:
    """_ensure for each (name, target, key, write), in order. The parts to build train side by
    side, one per CPU of the Ray cluster: each job is a single 1-CPU worker (the parts are tiny),
    so built one after another they left every other CPU idle, and a 2-CPU machine took twice
    as long. Nothing starts (no world, no Ray) when every part is cached."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [b for b in builds if (read_info(b[1]) or {}).get("key") != b[2]]
    if todo:
        session.world()   # once, before the threads that all read it
    slots = session.cpus() if len(todo) > 1 else 1
    with ThreadPoolExecutor(max_workers=max(1, min(slots, len(todo) or 1))) as pool:
        futures = {name: pool.submit(_ensure, target, key, write, log) for name, target, key, write in builds}
        return {name: future.result() for name, future in futures.items()}


def _build_tokenizer(session: _Session, out: Path) -> dict:
    from transformers import PreTrainedTokenizerFast

    from .text import all_special_tokens, train_tokenizer, world_texts

    texts = list(world_texts(session.world()))
    core = train_tokenizer(texts, session.spec.vocab_size)
    specials = all_special_tokens()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                  eos_token=TEXT_TOWER_EOS,
                                  additional_special_tokens=[t for t in specials if t not in ("<unk>", "<pad>", TEXT_TOWER_EOS)])
    tok.save_pretrained(out)
    core.save(str(out / "bpe.json"))  # the bare BPE that every family tokenizer wraps
    return {"kind": "tokenizer", "class": "PreTrainedTokenizerFast (byte-level BPE)", "vocab_size": len(tok),
            "texts": len(texts), "special_tokens": specials, "world": world_identity(session.spec),
            "content_hash": hashlib.sha256((out / "bpe.json").read_bytes()).hexdigest()[:16]}


def build_zoo(work_root: str | Path, size: str = "small", log: Callable[[str], None] = print, *,
              steps: int | dict[str, int] | None = None, seed: int = 0, num_cpus: int | None = None,
              only: Iterable[str] | None = None) -> dict:
    """Build (or reuse) every zoo artifact; returns {name: zoo.json info + "path", "cached"}.

    `steps` overrides the training steps of every job (int) or of named jobs (dict, e.g.
    {"phi": 50}); `seed` seeds the world and the training; `num_cpus` sizes a Ray cluster
    this call starts (an already running one is reused and left running); `only` names the
    parts to build (e.g. {"dinov2"}), plus the tokenizer when one of them needs it.
    """
    from tokenizers import Tokenizer

    from . import jobs, self_distill
    from .text import family_tokenizer

    spec = zoo_spec(size, steps, seed)
    names = [p.name for p in (*spec.lms, *spec.visions)]
    wanted = set(names if only is None else only)
    if wanted - set(names):
        from vlmsweep.config.errors import ConfigError

        raise ConfigError([("zoo.only", f"unknown part(s) {sorted(wanted - set(names))}; allowed: {names}")])
    lms = [lm for lm in spec.lms if lm.name in wanted]
    visions = [vis for vis in spec.visions if vis.name in wanted]
    zoo = Path(work_root).expanduser().resolve() / "zoo"
    session = _Session(zoo, spec, num_cpus, log)
    world = world_identity(spec)
    out: dict[str, dict] = {}
    try:
        tok_dir = str(zoo / "tokenizer")
        if lms or any(vis.uses_text for vis in visions):
            out["tokenizer"] = _ensure(zoo / "tokenizer", content_key("tokenizer", spec.vocab_size, world),
                                       lambda d: _build_tokenizer(session, d), log)
            tok_hash = out["tokenizer"]["content_hash"]

        builds = []
        for lm in lms:
            def write_lm(d: Path, lm=lm) -> dict:
                family_tokenizer(Tokenizer.from_file(str(Path(tok_dir) / "bpe.json")), lm.family).save_pretrained(d)
                job = {"spec": asdict(lm), "out_dir": str(d), "world_dir": str(session.world()), "seed": seed}
                return {"kind": "llm", "family": lm.family, "spec": asdict(lm), "world": world,
                        "tokenizer_hash": tok_hash, **session.fit(jobs.lm_pretrain, job, lm.name)}
            builds.append((lm.name, zoo / lm.name, content_key("llm", lm, world, tok_hash), write_lm))

        for vis in visions:
            # an image-only encoder (self-distillation) never reads the tokenizer: it stays out
            # of the job and the key, so a new tokenizer doesn't rebuild it
            text = {"tokenizer_hash": tok_hash} if vis.uses_text else {}

            def write_vision(d: Path, vis=vis, text=text) -> dict:
                job = {"spec": asdict(vis), "out_dir": str(d), "world_dir": str(session.world()), "seed": seed,
                       **({"tokenizer_dir": tok_dir} if text else {})}
                loop = jobs.vision_pretrain if text else self_distill.vision_self_distill
                return {"kind": "vision", "family": vis.family, "spec": asdict(vis), "world": world,
                        **text, **session.fit(loop, job, vis.name)}
            builds.append((vis.name, zoo / vis.name, content_key("vision", vis, world, *text.values()), write_vision))
        out.update(_ensure_all(builds, session, log))
    finally:
        session.close()
    for name, info in out.items():
        info["path"] = str(zoo / name)
    return out
