"""LLaVA ingestion: every skip kind counted and named, good samples exact, malformed files
fatal with a position, determinism, input hashing, the world's LLaVA export round trip, CLI."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from vlmsweep.cli import main
from vlmsweep.data.ingest import SKIP_KINDS, IngestError, ingest_llava
from vlmsweep.data.shards import iter_samples, read_manifest
from vlmsweep.data.world import build_world
from vlmsweep.data.world.build import SPLITS


def _img(fmt: str, colour: tuple[int, int, int], size=(8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


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
