"""LLaVA ingestion: every skip kind counted and named, good samples exact, malformed files
fatal with a position, determinism, input hashing, the world's LLaVA export round trip, CLI;
images confined to the image folder (audited: nothing outside is ever opened), size and
pixel limits checked before reading and decoding, duplicate ids."""

from __future__ import annotations

import functools
import io
import json
import os
import stat
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from vlmsweep.cli import main
from vlmsweep.data.images import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from vlmsweep.data.ingest import SKIP_KINDS, IngestError, ingest_llava
from vlmsweep.data.shards import iter_samples, read_manifest
from vlmsweep.data.world import build_world
from vlmsweep.data.world.build import SPLITS


def _img(fmt: str, colour: tuple[int, int, int], size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


@functools.cache
def _png_bomb(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid PNG of width×height black 1-bit pixels: ~12 KB on disk, 100M pixels decoded."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + the packed row
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))


def _sparse(path, size: int) -> None:
    with open(path, "wb") as f:  # a hole: no disk used, and it must never be read
        f.truncate(size)


def _h(text):
    return {"from": "human", "value": text}


def _g(text):
    return {"from": "gpt", "value": text}


GOOD = [
    {"id": 7, "image": "a.png", "conversations": [_h("<image>\nWhat colour?"), _g("Red.")]},
    {"id": "multi", "image": ["a.png", "b.jpg"], "conversations": [
        {"from": "user", "value": "<image>\n<image>\nSame?"}, {"from": "assistant", "value": "No."},
        {"from": "user", "value": "Why?"}, {"from": "assistant", "value": "Colours differ."}]},
    {"id": "text", "conversations": [{"from": "system", "value": "Be brief."}, _h("Hi?"), _g("Hello.")]},
    # LLaVA sometimes puts the marker after the text, without a newline: kept as is.
    {"id": "after", "image": "sub/c.png", "conversations": [_h("Describe this.<image>"), _g("A square.")]},
]
BAD = {
    "missing_image": [{"id": "miss", "image": "nope.png", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "image_outside_root": [
        {"id": "dotdot", "image": "../outside.png", "conversations": [_h("<image>\nQ"), _g("A")]},
        {"id": "absolute", "image": "/etc/passwd", "conversations": [_h("<image>\nQ"), _g("A")]},
        {"id": "link_out", "image": "link_out.png", "conversations": [_h("<image>\nQ"), _g("A")]},
        {"id": "link_passwd", "image": "passwd.png", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "image_not_a_file": [{"id": "dir", "image": "sub", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "image_file_too_large": [{"id": "huge", "image": "huge.png", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "image_too_many_pixels": [{"id": "bomb", "image": "bomb.png", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "unreadable_image": [
        {"id": "garbage", "image": "garbage.png", "conversations": [_h("<image>\nQ"), _g("A")]},
        {"id": "trunc", "image": "trunc.png", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "image_count_mismatch": [
        {"id": "nomark", "image": "a.png", "conversations": [_h("Q"), _g("A")]},
        {"id": "twomarks", "image": "a.png", "conversations": [_h("<image><image>Q"), _g("A")]},
        {"id": "markonly", "conversations": [_h("<image>\nQ"), _g("A")]}],
    "no_assistant_turn": [{"id": "noasst", "conversations": [_h("Q")]},
                          {"id": "emptyconv", "conversations": []}],
    "empty_text": [{"id": "blank", "conversations": [_h("Q"), _g("  \n")]}],
    "unknown_role": [{"id": "bot", "conversations": [_h("Q"), {"from": "bot", "value": "A"}]}],
    "duplicate_id": [{"id": "7", "conversations": [_h("Q"), _g("A")]},   # str(7) == "7"
                     {"id": "multi", "conversations": [_h("Q"), _g("A")]}],
    "bad_structure": [
        {"id": "convstr", "conversations": "hello"},
        {"id": "novalue", "conversations": [_h("Q"), {"from": "gpt"}]},
        {"id": "twousers", "conversations": [_h("Q"), _h("Q2"), _g("A")]},
        {"id": "gptfirst", "conversations": [_g("A"), _h("Q")]},
        {"id": "badimage", "image": 3, "conversations": [_h("Q"), _g("A")]},
        {"conversations": [_h("Q"), _g("A")]},          # no id: reported by position
        ["not", "an", "object"]],
}


def _records():
    recs = list(GOOD)
    for kind in SKIP_KINDS:
        recs += BAD[kind]
    return recs


def _expected_ids(recs):
    want = {}
    for kind in SKIP_KINDS:
        ids = []
        for r in BAD[kind]:
            i = next(j for j, x in enumerate(recs) if x is r)
            ids.append(str(r["id"]) if isinstance(r, dict) and "id" in r else f"#{i}")
        want[kind] = ids
    return want


@pytest.fixture
def llava(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(_img("PNG", (255, 0, 0)))
    (images / "b.jpg").write_bytes(_img("JPEG", (0, 0, 255)))
    (images / "sub" / "c.png").write_bytes(_img("PNG", (0, 255, 0)))
    (images / "garbage.png").write_bytes(b"definitely not an image")
    (images / "trunc.png").write_bytes(_img("PNG", (9, 9, 9), size=(64, 64))[:60])
    (tmp_path / "outside.png").write_bytes(_img("PNG", (1, 2, 3)))  # decodable: only the path is wrong
    (images / "link_out.png").symlink_to(tmp_path / "outside.png")
    (images / "passwd.png").symlink_to("/etc/passwd")
    _sparse(images / "huge.png", DEFAULT_MAX_IMAGE_BYTES + 1)
    (images / "bomb.png").write_bytes(_png_bomb())
    recs = _records()
    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps(recs, indent=2))
    jsonl_path = tmp_path / "jsonl" / "data.jsonl"
    jsonl_path.parent.mkdir()
    # JSONL can't hold a non-object line (that's a malformed file), so leave that one out.
    jsonl_path.write_text("\n".join(json.dumps(r) for r in recs if isinstance(r, dict)) + "\n")
    return json_path, jsonl_path, images, recs


def test_every_skip_kind_counted_and_named(llava, tmp_path):
    json_path, _, images, recs = llava
    m = ingest_llava(json_path, images, tmp_path / "out", progress=False)
    want = _expected_ids(recs)
    assert m["skipped"] == {k: len(v) for k, v in want.items()}
    assert m["skipped_ids"] == want
    assert set(m["skipped"]) == set(SKIP_KINDS)
    assert m["ingested"] == m["rows"] == len(GOOD)
    assert m["source"] == "llava/data"
    assert m["input"]["sha256"] and m["input"]["images_dir"] == str(images.resolve())
    report = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert report["skipped"] == m["skipped"] and report["skipped_ids"] == want
    assert report["input_hash"] == m["input_hash"]
    assert {d["kind"] for d in report["details"]} == set(SKIP_KINDS)
    reasons = {d["id"]: d["reason"] for d in report["details"]}
    assert "nope.png" in reasons["miss"] and "expected 'assistant'" in reasons["twousers"]
    assert "outside the image folder" in reasons["link_out"] and "is absolute" in reasons["absolute"]
    assert "is a directory" in reasons["dir"] and "over the limit of 67,108,864" in reasons["huge"]
    assert "10000×10000 = 100,000,000 pixels, over the limit of 89,478,485" in reasons["bomb"]
    limits = {"max_image_bytes": 64 << 20, "max_image_pixels": 89_478_485}
    assert m["limits"] == report["limits"] == limits


def test_good_samples_ingested_exactly(llava, tmp_path):
    json_path, _, images, _ = llava
    ingest_llava(json_path, images, tmp_path / "out", progress=False)
    got = {s["id"]: s for s in iter_samples(tmp_path / "out")}
    assert list(got) == ["7", "multi", "text", "after"]
    a, b, c = ((images / p).read_bytes() for p in ("a.png", "b.jpg", "sub/c.png"))
    assert got["7"]["images"] == [a] and got["7"]["modality"] == "image"
    assert got["7"]["conversations"] == [{"role": "user", "text": "<image>\nWhat colour?"},
                                         {"role": "assistant", "text": "Red."}]
    assert got["multi"]["images"] == [a, b] and got["multi"]["modality"] == "multi_image"
    assert [t["role"] for t in got["multi"]["conversations"]] == ["user", "assistant"] * 2
    assert got["text"]["images"] == [] and got["text"]["modality"] == "text"
    assert got["text"]["conversations"][0] == {"role": "system", "text": "Be brief."}
    assert got["after"]["conversations"][0]["text"] == "Describe this.<image>"
    assert got["after"]["images"] == [c]
    assert {s["source"] for s in got.values()} == {"llava/data"}
    m = ingest_llava(json_path, images, tmp_path / "named", source="mine", progress=False)
    assert m["source"] == "mine" and {s["source"] for s in iter_samples(tmp_path / "named")} == {"mine"}


def test_jsonl_gives_the_same_result(llava, tmp_path):
    json_path, jsonl_path, images, _ = llava
    a = ingest_llava(json_path, images, tmp_path / "a", progress=False)
    b = ingest_llava(jsonl_path, images, tmp_path / "b", progress=False)
    assert b["content_hash"] == a["content_hash"] and b["ingested"] == a["ingested"]
    bad_a = {k: v for k, v in a["skipped_ids"].items()}
    bad_a["bad_structure"] = [i for i in bad_a["bad_structure"] if not i.startswith("#")]
    bad_b = {k: [i for i in v if not i.startswith("#")] for k, v in b["skipped_ids"].items()}
    assert bad_b == bad_a
    # JSONL detected by content too, whatever the extension.
    renamed = tmp_path / "data.txt"
    renamed.write_bytes(jsonl_path.read_bytes())
    assert ingest_llava(renamed, images, tmp_path / "c", source="llava/data",
                        progress=False)["content_hash"] == a["content_hash"]


def test_malformed_json_names_file_and_position(llava, tmp_path):
    _, _, images, _ = llava
    bad = tmp_path / "broken.json"
    bad.write_text('[\n  {"id": 1, "conversations": []},\n  {"id": 2,, }\n]\n')
    out = tmp_path / "out"
    with pytest.raises(IngestError) as e:
        ingest_llava(bad, images, out, progress=False)
    assert str(bad) in str(e.value) and "line 3 column 12" in str(e.value)
    assert isinstance(e.value, ValueError) and not out.exists()  # nothing written

    obj = tmp_path / "obj.json"
    obj.write_text('{\n "id": 1, "conversations": []\n}\n')
    with pytest.raises(IngestError, match=r"obj\.json:1:1: top level is a JSON dict"):
        ingest_llava(obj, images, out, progress=False)
    assert not out.exists()


def test_malformed_jsonl_names_line(llava, tmp_path):
    _, _, images, _ = llava
    good_line = json.dumps({"id": "x", "conversations": [_h("Q"), _g("A")]})
    bad = tmp_path / "broken.jsonl"
    bad.write_text(f"{good_line}\n\n{good_line[:-5]}\n{good_line}\n")
    with pytest.raises(IngestError) as e:
        ingest_llava(bad, images, tmp_path / "out", progress=False)
    assert str(bad) in str(e.value) and "line 3" in str(e.value)
    notobj = tmp_path / "list.jsonl"
    notobj.write_text(f"{good_line}\n[1, 2]\n")
    with pytest.raises(IngestError, match=r"list\.jsonl:2: line 2 is a JSON list"):
        ingest_llava(notobj, images, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_images_dir_or_file_is_fatal(llava, tmp_path):
    json_path, _, _, _ = llava
    with pytest.raises(IngestError, match="no-such-dir"):
        ingest_llava(json_path, tmp_path / "no-such-dir", tmp_path / "out", progress=False)
    with pytest.raises(IngestError, match="absent.json"):
        ingest_llava(tmp_path / "absent.json", tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_reingest_is_byte_identical_and_bounded(llava, tmp_path):
    json_path, _, images, _ = llava
    kw = dict(progress=False, max_rows_per_shard=2)
    a = ingest_llava(json_path, images, tmp_path / "a", **kw)
    b = ingest_llava(json_path, images, tmp_path / "b", **kw)
    again = ingest_llava(json_path, images, tmp_path / "a", **kw)  # over the old output
    assert a["content_hash"] == b["content_hash"] == again["content_hash"]
    assert a["input_hash"] == b["input_hash"]
    assert [s["rows"] for s in a["shards"]] == [2, 2]
    for s in a["shards"]:
        assert (tmp_path / "a" / s["file"]).read_bytes() == (tmp_path / "b" / s["file"]).read_bytes()
    assert read_manifest(tmp_path / "a") == again


def test_changed_image_changes_input_hash(llava, tmp_path):
    json_path, _, images, _ = llava
    before = ingest_llava(json_path, images, tmp_path / "a", progress=False)
    (images / "b.jpg").write_bytes(_img("JPEG", (0, 200, 200)))
    after = ingest_llava(json_path, images, tmp_path / "b", progress=False)
    assert after["input"]["sha256"] == before["input"]["sha256"]  # same JSON
    assert after["input_hash"] != before["input_hash"]
    assert after["content_hash"] != before["content_hash"]
    # An image that only a skipped sample reads still counts: it was read.
    (images / "garbage.png").write_bytes(b"other garbage")
    third = ingest_llava(json_path, images, tmp_path / "c", progress=False)
    assert third["input_hash"] != after["input_hash"] and third["content_hash"] == after["content_hash"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, build_world(out, seed=0, size="tiny", image_size=64)


def test_world_llava_export_format(world):
    out, summary = world
    assert summary["llava"]["image_folder"] == "llava/images"
    recs = json.loads((out / "llava" / "instruct.json").read_text())
    assert len(recs) == summary["splits"]["instruct"]["rows"]
    kinds = {type(r.get("image")).__name__ for r in recs}
    assert kinds == {"str", "list", "NoneType"}  # single image, multi-image, text-only
    assert {t["from"] for r in recs for t in r["conversations"]} == {"human", "gpt", "system"}
    multi = next(r for r in recs if isinstance(r.get("image"), list))
    assert multi["image"] == [f"instruct/{multi['id']}_{k}.png" for k in range(len(multi["image"]))]
    assert all((out / "llava" / "images" / p).is_file() for p in multi["image"])
    assert all("image" not in r for r in recs if r["source"] == "world/text_only")


@pytest.mark.parametrize("split", SPLITS)
def test_world_llava_export_round_trips(world, split, tmp_path):
    out, summary = world
    m = ingest_llava(out / "llava" / f"{split}.json", out / "llava" / "images", tmp_path / split,
                     progress=False)
    assert m["skipped"] == {} and m["rows"] == summary["splits"][split]["rows"]
    assert m["content_hash"] == summary["splits"][split]["content_hash"]
    assert m["modalities"] == summary["splits"][split]["modalities"]
    assert m["sources"] == summary["splits"][split]["sources"]


def test_cli_reports_and_exits_0(llava, tmp_path, capsys):
    json_path, _, images, recs = llava
    out = tmp_path / "out"
    rc = main(["data", "ingest", str(json_path), "--images", str(images), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    m = read_manifest(out)
    assert f"ingested {len(GOOD)} sample(s)" in printed and m["content_hash"] in printed
    assert str(out) in printed
    for kind, ids in _expected_ids(recs).items():
        line = next(ln for ln in printed.splitlines() if ln.strip().startswith(kind))
        assert line.split()[1] == str(len(ids)) and all(i in line for i in ids[:5])


def test_cli_malformed_file_exits_2(llava, tmp_path, capsys):
    _, _, images, _ = llava
    bad = tmp_path / "broken.json"
    bad.write_text("[{")
    rc = main(["data", "ingest", str(bad), "--images", str(images), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "line 1" in err


# --- confinement, limits, duplicates -------------------------------------------------------

_AUDIT = """
import json, os, sys
opened = []
def record(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        opened.append(os.fsdecode(os.fspath(args[0])))
from vlmsweep.data.ingest import ingest_llava
sys.addaudithook(record)  # after the imports: only what ingestion opens
m = ingest_llava(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
result = {"skipped_ids": m["skipped_ids"], "ingested": m["ingested"], "opened": list(opened)}
with open(sys.argv[4], "w") as f:
    json.dump(result, f)
"""


def _sample(rid, *paths):
    return {"id": rid, "image": list(paths),
            "conversations": [_h("<image>" * len(paths) + "Q"), _g("A")]}


@pytest.fixture
def hostile(tmp_path):
    """An image folder whose paths try every way out of it, or into a file that can't be read
    safely, plus the records naming them: {expected skip kind: [ids]} for the bad ones."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.png").write_bytes(_img("PNG", (255, 0, 0)))
    (root / "sub" / "b.png").write_bytes(_img("PNG", (0, 255, 0)))
    (outside / "secret.png").write_bytes(_img("PNG", (0, 0, 255)))  # would decode fine
    (root / "link_in.png").symlink_to("sub/b.png")
    (root / "link_out.png").symlink_to(outside / "secret.png")
    (root / "link_out_rel.png").symlink_to("../outside/secret.png")
    (root / "link_passwd.png").symlink_to("/etc/passwd")
    (root / "link_zero.png").symlink_to("/dev/zero")
    (root / "outdir").symlink_to(outside)  # a linked folder leaving the root
    (root / "dangling.png").symlink_to("sub/gone.png")
    os.mkfifo(root / "pipe.png")  # opening it for reading would block forever
    (root / "link_pipe.png").symlink_to("pipe.png")
    _sparse(root / "huge.png", DEFAULT_MAX_IMAGE_BYTES + 1)
    recs = [_sample("inside", "a.png"), _sample("dotdot_inside", "sub/../a.png"),
            _sample("link_in", "link_in.png"), _sample("two", "a.png", "sub/b.png")]
    bad = {
        "image_outside_root": [
            _sample("dotdot", "../outside/secret.png"),
            _sample("dotdot_deep", "sub/../../outside/secret.png"),
            _sample("absolute", str(outside / "secret.png")),
            _sample("absolute_inside", str(root / "a.png")),  # relative paths only
            _sample("link_out", "link_out.png"), _sample("link_out_rel", "link_out_rel.png"),
            _sample("link_passwd", "link_passwd.png"), _sample("link_zero", "link_zero.png"),
            _sample("via_outdir", "outdir/secret.png"),
            _sample("second_out", "a.png", "../outside/secret.png")],
        "image_not_a_file": [_sample("dir", "sub"), _sample("root_itself", "."),
                             _sample("fifo", "pipe.png"), _sample("link_fifo", "link_pipe.png")],
        "image_file_too_large": [_sample("huge", "huge.png")],
        "missing_image": [_sample("dangling", "dangling.png")],
    }
    never = {str(outside / "secret.png"), "/etc/passwd", "/dev/zero", str(root / "pipe.png"),
             str(root / "huge.png")}
    try:  # a device node inside the root (needs CAP_MKNOD; the FIFO covers the same check)
        os.mknod(root / "zero.png", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        bad["image_not_a_file"].append(_sample("device", "zero.png"))
        never.add(str(root / "zero.png"))
    except (PermissionError, OSError):
        pass
    for samples in bad.values():
        recs += samples
    json_path = tmp_path / "hostile.json"
    json_path.write_text(json.dumps(recs))
    want = {k: [s["id"] for s in v] for k, v in bad.items()}
    return json_path, root, want, never


def test_nothing_outside_the_root_is_ever_opened(hostile, tmp_path):
    json_path, root, want, never = hostile
    result_path = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", _AUDIT, str(json_path), str(root),
                           str(tmp_path / "out"), str(result_path)],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(result_path.read_text())
    opened = {os.path.realpath(os.path.join(tmp_path, p)) for p in result["opened"]}
    assert str(root / "a.png") in opened and str(root / "sub" / "b.png") in opened  # hook works
    assert not opened & never
    assert not any(p.startswith(str(tmp_path / "outside")) for p in opened)
    allowed = (str(root) + os.sep, str(tmp_path / "out") + os.sep)
    assert all(p.startswith(allowed) or p == str(json_path) or p == str(result_path)
               for p in opened if p.startswith(str(tmp_path) + os.sep))
    assert result["skipped_ids"] == {k: want[k] for k in SKIP_KINDS if k in want}
    assert result["ingested"] == 4


def test_confinement_reasons_in_process(hostile, tmp_path):
    json_path, root, want, _ = hostile
    m = ingest_llava(json_path, root, tmp_path / "out", progress=False)
    assert m["skipped_ids"] == {k: want[k] for k in SKIP_KINDS if k in want}
    got = {s["id"]: s["images"] for s in iter_samples(tmp_path / "out")}
    a, b = (root / "a.png").read_bytes(), (root / "sub" / "b.png").read_bytes()
    assert got == {"inside": [a], "dotdot_inside": [a], "link_in": [b], "two": [a, b]}
    report = json.loads((tmp_path / "out" / "skipped.json").read_text())
    reasons = {d["id"]: d["reason"] for d in report["details"]}
    assert "outside the image folder" in reasons["link_passwd"] and "/etc/passwd" in reasons["link_passwd"]
    assert "is absolute" in reasons["absolute_inside"]
    assert "not a regular file" in reasons["fifo"] and "is a directory" in reasons["root_itself"]


def test_pixel_limit_from_header_before_decoding(llava, tmp_path, monkeypatch):
    json_path, _, images, _ = llava
    decoded = []  # sizes of images PIL verified or decoded
    real_load, real_verify = ImageFile.ImageFile.load, PngImagePlugin.PngImageFile.verify
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: decoded.append(self.size) or real_load(self))
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "verify",
                        lambda self: decoded.append(self.size) or real_verify(self))
    m = ingest_llava(json_path, images, tmp_path / "out", progress=False)
    assert m["skipped_ids"]["image_too_many_pixels"] == ["bomb"]
    assert decoded and (10_000, 10_000) not in decoded


def test_pixel_limit_is_ours_and_configurable(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(_img("PNG", (255, 0, 0), size=(8, 6)))  # 48 pixels
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps([_sample("a", "a.png")]))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # PIL's global threshold doesn't decide
    kept = ingest_llava(json_path, images, tmp_path / "kept", progress=False, max_image_pixels=48)
    assert kept["ingested"] == 1 and kept["limits"]["max_image_pixels"] == 48
    over = ingest_llava(json_path, images, tmp_path / "over", progress=False, max_image_pixels=47)
    assert over["skipped_ids"] == {"image_too_many_pixels": ["a"]}
    report = json.loads((tmp_path / "over" / "skipped.json").read_text())
    assert report["limits"] == {"max_image_bytes": DEFAULT_MAX_IMAGE_BYTES, "max_image_pixels": 47}
    assert "8×6 = 48 pixels, over the limit of 47" in report["details"][0]["reason"]
    assert Image.MAX_IMAGE_PIXELS == 10  # set aside only while ingesting


def test_file_size_cap_is_configurable(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    data = _img("PNG", (255, 0, 0))
    (images / "a.png").write_bytes(data)
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps([_sample("a", "a.png")]))
    kept = ingest_llava(json_path, images, tmp_path / "kept", progress=False, max_image_bytes=len(data))
    assert kept["ingested"] == 1 and kept["limits"]["max_image_bytes"] == len(data)
    over = ingest_llava(json_path, images, tmp_path / "over", progress=False,
                        max_image_bytes=len(data) - 1)
    assert over["skipped_ids"] == {"image_file_too_large": ["a"]}
    assert over["limits"] == {"max_image_bytes": len(data) - 1,
                              "max_image_pixels": DEFAULT_MAX_IMAGE_PIXELS}


@pytest.mark.parametrize("option", ["max_image_bytes", "max_image_pixels"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "64", True, None])
def test_bad_limit_is_a_one_line_error(llava, tmp_path, option, value):
    json_path, _, images, _ = llava
    with pytest.raises(IngestError, match=rf"^{option} must be a positive integer, got ") as e:
        ingest_llava(json_path, images, tmp_path / "out", progress=False, **{option: value})
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_duplicate_ids_keep_the_first(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(_img("PNG", (255, 0, 0)))
    (images / "b.png").write_bytes(_img("PNG", (0, 0, 255)))
    recs = [_sample("d", "a.png"), _sample("d", "b.png"), _sample(4, "b.png"), _sample("4", "a.png"),
            {"id": "e", "conversations": [_h("Q")]},  # the first "e" is bad: it still claims the id
            _sample("e", "a.png"), _sample("d", "a.png")]
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps(recs))
    m = ingest_llava(json_path, images, tmp_path / "out", progress=False)
    assert m["skipped_ids"] == {"no_assistant_turn": ["e"], "duplicate_id": ["d", "4", "e", "d"]}
    got = {s["id"]: s["images"] for s in iter_samples(tmp_path / "out")}
    assert got == {"d": [(images / "a.png").read_bytes()], "4": [(images / "b.png").read_bytes()]}
    details = json.loads((tmp_path / "out" / "skipped.json").read_text())["details"]
    dup = [(d["index"], d["reason"]) for d in details if d["kind"] == "duplicate_id"]
    assert dup == [(1, "id 'd' already used by sample #0"), (3, "id '4' already used by sample #2"),
                   (5, "id 'e' already used by sample #4"), (6, "id 'd' already used by sample #0")]


def test_lone_surrogates_and_nul_are_skips_not_crashes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    recs = [{"id": "\ud800x", "conversations": [_h("Q"), _g("A")]},   # JSON "\ud800" escapes
            {"id": "text", "conversations": [_h("Q \udc80"), _g("A")]},
            _sample("path", "\ud800.png"), _sample("nul", "a\0.png"), _sample("ok", "a\0.png"[:1])]
    (images / "a").write_bytes(_img("PNG", (255, 0, 0)))
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps(recs))  # ASCII: the escapes stay escapes
    m = ingest_llava(json_path, images, tmp_path / "out", progress=False)
    assert m["skipped_ids"] == {"unreadable_image": ["nul"], "bad_structure": ["#0", "text", "path"]}
    assert m["ingested"] == 1
    details = {d["id"]: d["reason"] for d in json.loads((tmp_path / "out" / "skipped.json").read_text())["details"]}
    assert "lone surrogate" in details["#0"] and "embedded null byte" in details["nul"]
