"""``hvqc bench``: BD-rate on known curves, codec adapters, result formats, the CLI."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features

from hvqc import bench
from hvqc import codec as codec_mod
from hvqc.analysis.rd import bd_rate, log_spaced_settings, quality_overlap, rd_hull

RATE = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
PSNR = np.array([24.0, 26.5, 29.0, 31.0, 33.5])
ROOT = Path(__file__).resolve().parents[1]


# --- BD-rate -------------------------------------------------------------------------

def test_bd_rate_half_the_rate_everywhere_is_minus_50():
    assert bd_rate(RATE, PSNR, RATE / 2, PSNR) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(RATE, PSNR, RATE * 2, PSNR) == pytest.approx(100.0, abs=1e-9)


def test_bd_rate_identical_curves_is_zero():
    assert bd_rate(RATE, PSNR, RATE, PSNR) == pytest.approx(0.0, abs=1e-12)


def test_bd_rate_is_none_without_overlap_or_points():
    assert bd_rate(RATE, PSNR, RATE, PSNR + 20) is None
    assert bd_rate(RATE, PSNR, RATE[:1], PSNR[:1]) is None
    assert quality_overlap([1, 2], [3, 4]) is None
    assert quality_overlap([1, 3], [2, 4]) == (2.0, 3.0)


def test_bd_rate_uses_only_the_shared_quality_interval():
    # log-rate linear in quality (rate doubles every 3 dB), which PCHIP reproduces exactly
    # on any subset: a half-rate test curve covering 26.5-31 dB only is -50 %
    rate = 0.05 * 2 ** ((PSNR - 24) / 3)
    part = slice(1, 4)
    assert bd_rate(rate, PSNR, rate[part] / 2, PSNR[part]) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(rate[part] / 2, PSNR[part], rate, PSNR) == pytest.approx(100.0, abs=1e-9)


def test_bd_rate_is_order_free_and_drops_dominated_points():
    r, q = rd_hull([0.4, 0.1, 0.2, 0.3, 0.05], [31, 26.5, 29, 28, 24])
    assert r.tolist() == [0.05, 0.1, 0.2, 0.4] and q.tolist() == [24, 26.5, 29, 31]
    shuffled = [3, 0, 4, 1, 2]
    assert bd_rate(RATE[shuffled], PSNR[shuffled], RATE / 2, PSNR) == pytest.approx(-50.0, abs=1e-9)


# --- adapters ------------------------------------------------------------------------

MAGIC = {"jpeg": (0, b"\xff\xd8\xff"), "webp": (8, b"WEBP"), "jpeg2000": (0, b"\xff\x4f\xff\x51"),
         "avif": (4, b"ftyp")}


def test_log_spaced_settings_even_in_log_rate():
    """A rate of 1/setting: the ladder is geometric too; a staircase rate: each pick is
    where the rate first reaches its target, between the grid points around it."""
    grid = np.geomspace(0.5, 50, 401)
    ladder = log_spaced_settings(grid, 1 / grid, 5)
    assert ladder[0] == 0.5 and ladder[-1] == 50
    assert ladder == pytest.approx(list(np.geomspace(0.5, 50, 5)), rel=1e-3)
    steps = np.array([8.0, 8, 3, 3, 1.5, 1.5, 1])         # targets 4 and 2 fall in the drops
    got = log_spaced_settings(np.arange(1.0, 8), steps, 4)
    assert got[0] == 1 and got[-1] == 7
    assert got[1] == pytest.approx(2 * 1.5 ** 0.8)         # 4 is 4/5 of the way from 8 to 3
    assert got[2] == pytest.approx(4 * 1.25 ** (2 / 3))    # 2 is 2/3 of the way from 3 to 1.5


@pytest.mark.parametrize("settings, rate, count", [
    ([1, 2, 3], [3, 4, 2], 3),                  # the rate rises
    ([1, 3, 2], [3, 2, 1], 3),                  # the settings fall back
    ([0, 1, 2], [3, 2, 1], 3),                  # a setting of zero has no log
    ([1, 2, 3], [3, 2], 3),                     # one rate short
    ([1, 2, 3], [3, 2, 1], 1),                  # a ladder needs both ends
])
def test_log_spaced_settings_rejects_bad_curves(settings, rate, count):
    with pytest.raises(ValueError):
        log_spaced_settings(settings, rate, count)


def test_lambda_ladder_is_the_one_derived_for_the_shipped_model(photo_weights):
    """``hvqc-rd``'s slopes are ``bench/ladder.py``'s, derived on training photos for the
    shipped weights: a new model, or a hand-edited ladder, must rederive them."""
    found = json.loads((ROOT / "bench" / "results" / "ladder.json").read_text())
    manifest = json.loads((photo_weights / "manifest.json").read_text())
    assert found["weights_sha256"] == manifest["models"]["photo"]["sha256"]
    assert tuple(found["ladder"]) == bench.HvqcRDCodec.LAMBDAS
    assert "kodak" not in found["images"].lower()
    lam = [c["lambda"] for c in found["curve"]]
    rate = [c["bpp"] for c in found["curve"]]
    want = [float(f"{x:.2g}") for x in log_spaced_settings(lam, rate, len(found["ladder"]))]
    assert want == found["ladder"]


def test_search_screen_is_the_one_measured_for_the_shipped_model(photo_weights):
    """``hvqc encode --lambda --search`` searches only the levels within ``SCREEN_MARGIN`` of
    the best plain level (``SCREEN_MARGIN_TOP`` for the top level): the margins
    ``bench/screen.py`` measured for the shipped weights on training photos, at which the
    screen picked what searching every level picked. A new model, or an edited margin, must
    measure them again."""
    found = json.loads((ROOT / "bench" / "results" / "screen.json").read_text())
    manifest = json.loads((photo_weights / "manifest.json").read_text())
    assert manifest["models"]["photo"]["sha256"].startswith(found["weights"])
    assert found["screen_margin"] == codec_mod.SCREEN_MARGIN
    assert found["screen_margin_top"] == codec_mod.SCREEN_MARGIN_TOP
    assert "kodak" not in found["folder"].lower()
    encodes = found["encodes"]
    assert len(encodes) == found["summary"]["encodes"] >= 50
    assert found["summary"]["same_pick"] == len(encodes)
    assert found["top_margins"][f"{codec_mod.SCREEN_MARGIN_TOP:g}"]["picks_unlike_every_level"] == 0
    for e in encodes:                 # the levels searched are those the margins let through
        whole = e["plain_whole_cost"]
        best, top = min(whole.values()), max(whole, key=int)
        margin = {lv: found["screen_margin_top" if lv == top else "screen_margin"] for lv in whole}
        assert e["screened_levels"] == sorted(int(lv) for lv, c in whole.items()
                                              if c <= best * (1 + margin[lv]))
    assert found["summary"]["levels_searched_per_encode"] < 2


@pytest.mark.parametrize("cls", [bench.JPEG, bench.WebP, bench.JPEG2000, bench.AVIF])
def test_pillow_adapter_round_trips_and_counts_the_real_bytes(cls, photo_img):
    if not features.check(cls.feature):
        pytest.skip(f"this Pillow has no {cls.name}")
    codec = cls()
    assert 8 <= len(codec.settings) <= 12
    off, magic = MAGIC[codec.key]
    sizes = []
    for s in codec.settings:
        enc = codec.encode(photo_img, s)
        assert enc.num_bytes == len(enc.data) and enc.data[off:off + len(magic)] == magic
        row, rec = bench.measure(codec, photo_img, s)
        assert row["bytes"] == len(enc.data)                  # deterministic encoders
        assert row["bpp"] == 8 * len(enc.data) / (96 * 64)
        assert rec.size == (96, 64) and rec.mode == "RGB"
        assert row["ms-ssim-rgb"] is None                     # 96x64 is too small for MS-SSIM
        sizes.append(row["bytes"])
    assert row["psnr-rgb"] > 20                               # the best setting looks like the photo
    assert min(sizes) < max(sizes)


def test_hvqc_adapter_is_the_api(tiny, photo_img, monkeypatch):
    from hvqc import zoo
    monkeypatch.setattr(zoo, "load", lambda name: tiny)
    codec = bench.HvqcCodec("tiny")
    assert codec.settings == ((1, 0), (1, 2), (2, 0), (2, 2), (3, 0))
    assert [codec.label(s) for s in codec.settings] == ["L1", "L1:2/4", "L2", "L2:2/4", "L3"]
    for level, groups in codec.settings:
        row, rec = bench.measure(codec, photo_img, (level, groups))
        assert row["bytes"] == len(codec_mod.compress_image(tiny, photo_img, level, groups=groups).data)
        assert rec.size == photo_img.size


@pytest.fixture(scope="module")
def peer_ckpt(tmp_path_factory):
    """A randomly initialised tiny CompressAI factorized-prior model (N=M=8), saved as a
    training checkpoint ({"state_dict": ...}) would be."""
    from compressai.models import FactorizedPrior
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("peer") / "tiny-q1.pth.tar"
    torch.save({"state_dict": FactorizedPrior(8, 8).state_dict(), "epoch": 0}, path)
    return path


def test_peer_adapter_measures_the_compress_strings(peer_ckpt, photo_img):
    codec = bench.PeerCodec("bmshj2018-factorized", [peer_ckpt])
    assert codec.label(0) == "tiny-q1"
    enc = codec.encode(photo_img, 0)
    out, _ = enc.data
    assert enc.num_bytes == sum(len(s) for group in out["strings"] for s in group) > 0
    row, rec = bench.measure(codec, photo_img, 0)
    assert row["bytes"] == enc.num_bytes                      # the same bytes every time
    assert rec.size == (96, 64) and np.isfinite(row["psnr-rgb"])


def test_peer_errors(peer_ckpt, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(bench.BenchError, match="not a checkpoint"):
        bench.PeerCodec("bmshj2018-factorized", [bad])
    with pytest.raises(bench.BenchError, match="cannot load a bmshj2018-hyperprior"):
        bench.PeerCodec("bmshj2018-hyperprior", [peer_ckpt])
    with pytest.raises(bench.BenchError, match="NAME=CHECKPOINT"):
        bench.parse_peers(["bmshj2018-factorized"])
    with pytest.raises(bench.BenchError, match="unknown peer"):
        bench.parse_peers([f"vtm={peer_ckpt}"])
    with pytest.raises(bench.BenchError, match="no such file"):
        bench.parse_peers([f"bmshj2018-factorized={tmp_path / 'none.pt'}"])
    assert bench.parse_peers([f"bmshj2018-factorized={peer_ckpt}"] * 2) == {
        "bmshj2018-factorized": [peer_ckpt]}


def test_argument_checks(tmp_path):
    assert bench.parse_codecs("JPEG, webp,jpeg") == ["jpeg", "webp"]
    with pytest.raises(bench.BenchError, match="unknown codec 'bpg'"):
        bench.parse_codecs("jpeg,bpg")
    with pytest.raises(bench.BenchError, match="no codecs"):
        bench.make_codecs([], peers={})
    with pytest.raises(bench.BenchError, match="no images"):
        bench.list_images(tmp_path)
    with pytest.raises(bench.BenchError, match="--limit"):
        bench.list_images(tmp_path, 0)


# --- results -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory, photo_path):
    """Three 96x64 images (the photo, mirrored, flipped) plus a non-image file."""
    d = tmp_path_factory.mktemp("images")
    img = Image.open(photo_path).convert("RGB")
    img.save(d / "a.png")
    img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(d / "b.png")
    img.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(d / "c.png")
    (d / "SHA256SUMS").write_text("not an image\n")
    return d


def test_compressai_json_format(images):
    files = bench.list_images(images, limit=2)
    assert [f.name for f in files] == ["a.png", "b.png"]
    codec = bench.JPEG()
    res = bench.run(files, [codec], progress=False)
    assert len(res.rows) == 2 * len(codec.settings)
    assert res.notes and "161 px" in res.notes[0] and "2 of 2" in res.notes[0]
    j = json.loads(json.dumps(bench.compressai_json(codec, res.rows)))
    assert j["name"] == "JPEG" and j["description"]
    assert set(j["results"]) == {"bpp", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-rgb-db",
                                 "encoding_time", "decoding_time"}
    bpp = j["results"]["bpp"]
    assert len(bpp) == len(j["settings"]) == len(codec.settings) and bpp == sorted(bpp)
    assert all(len(v) == len(bpp) for v in j["results"].values())
    assert j["results"]["ms-ssim-rgb"] == [None] * len(bpp)
    assert len(j["per_image"]) == len(res.rows)
    q1 = [r["bpp"] for r in j["per_image"] if r["setting"] == "q1"]
    assert bpp[j["settings"].index("q1")] == pytest.approx(sum(q1) / 2)


def test_ms_ssim_measured_on_large_enough_images(photo_img):
    big = photo_img.resize((192, 168))
    row, _ = bench.measure(bench.JPEG(), big, 10)
    assert 0 < row["ms-ssim-rgb"] < 1
    assert row["ms-ssim-rgb-db"] == pytest.approx(-10 * np.log10(1 - row["ms-ssim-rgb"]))


# --- command line --------------------------------------------------------------------

def _one_error(rc, err, *fragments):
    assert rc == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvqc: error:"), err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_missing_image_folder_creates_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HVQC_DATA", str(tmp_path / "data"))
    rc, out, err = cli("bench", "-o", tmp_path / "out")          # default: the data folder's kodak/
    _one_error(rc, err, "image folder not found", "kodak")
    rc, out, err = cli("bench", tmp_path / "nowhere", "-o", tmp_path / "out")
    _one_error(rc, err, "image folder not found")
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_codec(cli, images, tmp_path):
    rc, out, err = cli("bench", images, "--codecs", "jpeg,bpg", "-o", tmp_path / "out")
    _one_error(rc, err, "unknown codec 'bpg'")
    assert list(tmp_path.iterdir()) == []


def test_cli_existing_results_need_force(cli, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("old")
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "-o", out)
    _one_error(rc, err, "not empty", "--force")
    assert [p.name for p in out.iterdir()] == ["summary.md"]
    assert (out / "summary.md").read_text() == "old"


def test_cli_end_to_end(cli, images, peer_ckpt, tmp_path):
    out = tmp_path / "res"
    rc, stdout, err = cli("bench", images, "--codecs", "hvqc,jpeg", "--model", "tiny", "--limit", "2",
                          "--peer", f"bmshj2018-factorized={peer_ckpt}", "-o", out)
    assert rc == 0, err
    assert err.count("hvqc: note: MS-SSIM") == 1 and "error" not in err
    assert "summary.md" in stdout
    names = {"hvqc.json", "jpeg.json", "bmshj2018-factorized.json", "results.csv", "rd_psnr.png",
             "rd_msssim.png", "crops.png", "bd_rate.json", "summary.md"}
    assert {p.name for p in out.iterdir()} == names              # no temporaries left
    hv = json.loads((out / "hvqc.json").read_text())
    assert hv["settings"] == ["L3", "L2:2/4", "L2", "L1:2/4", "L1"]
    assert hv["results"]["bpp"] == sorted(hv["results"]["bpp"])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (5 + len(bench.JPEG.settings) + 1)
    assert {r["image"] for r in rows} == {"a.png", "b.png"}
    for r in rows:
        assert float(r["bpp"]) == pytest.approx(8 * int(r["bytes"]) / (96 * 64))
        assert r["ms-ssim-rgb"] == ""
    bd = json.loads((out / "bd_rate.json").read_text())
    assert set(bd["against"]) == {"jpeg", "bmshj2018-factorized"}
    for e in bd["against"].values():
        for m in ("psnr", "ms-ssim"):
            assert e[m]["bd_rate"] is None or np.isfinite(e[m]["bd_rate"])
            assert e[m]["bd_rate"] is not None or e[m]["reason"]
    for png in ("rd_psnr.png", "rd_msssim.png", "crops.png"):
        assert Image.open(out / png).format == "PNG"
    md = (out / "summary.md").read_text()
    assert "## hvqc (tiny)" in md and "## JPEG" in md and "## BD-rate of hvqc" in md
    # --force writes into the non-empty folder
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--limit", "1", "-o", out, "--force")
    assert rc == 0, err
    assert len(json.loads((out / "jpeg.json").read_text())["per_image"]) == len(bench.JPEG.settings)


def test_search_adds_a_second_hvqc_entry(tiny, images, photo_img, tmp_path, monkeypatch):
    """``--search``: hvqc twice, plain and searched, each with its own BD-rate table."""
    from hvqc import zoo
    from hvqc.search import SearchSettings
    monkeypatch.setattr(zoo, "load", lambda name: tiny)
    s = SearchSettings(steps=2, lr=0.1)
    with pytest.raises(bench.BenchError, match="--search needs hvqc"):
        bench.make_codecs(["jpeg"], "tiny", search=s)
    codecs = bench.make_codecs(["hvqc", "jpeg"], "tiny", search=s)
    assert [c.key for c in codecs] == ["hvqc", "hvqc-search", "jpeg"]
    searched = codecs[1]
    assert searched.name == "hvqc (tiny, search 2)"
    assert searched.settings == ((1, 0), (1, 2))           # the tiny model re-quantizes above level 1
    monkeypatch.setitem(tiny.info, "descent", "mean")
    assert bench.HvqcCodec("tiny", s).settings == codecs[0].settings
    for level, groups in searched.settings:
        row, _ = bench.measure(searched, photo_img, (level, groups))
        want = codec_mod.compress_image(tiny, photo_img, level, groups=groups, search=s).data
        assert row["bytes"] == len(want) and row["codec"] == "hvqc-search"
    res = bench.run(sorted(images.glob("*.png"))[:1], codecs, progress=False)
    paths = {p.name for p in bench.write_outputs(res, tmp_path)}
    assert {"hvqc-search.json", "bd_rate.json", "bd_rate-hvqc-search.json"} <= paths
    bd = json.loads((tmp_path / "bd_rate-hvqc-search.json").read_text())
    assert bd["test"] == "hvqc-search" and set(bd["against"]) == {"hvqc", "jpeg"}
    md = (tmp_path / "summary.md").read_text()
    assert "## BD-rate of hvqc (tiny)\n" in md and "## BD-rate of hvqc (tiny, search 2)\n" in md


def test_cli_search_is_checked(cli, images, tmp_path):
    for args, msg in ((["--search", "-1"], "--search must be 0 or more steps, got -1"),
                      (["--codecs", "jpeg", "--search", "2"], "--search needs hvqc or hvqc-rd among the codecs")):
        rc, _, err = cli("bench", images, *args, "-o", tmp_path / "out")
        _one_error(rc, err, msg)
        assert list(tmp_path.iterdir()) == []


def test_peer_labels_name_the_run_where_files_share_a_name():
    P = Path
    assert bench._labels([P("a/q1.pth.tar"), P("b/q2.pth.tar")]) == ["q1", "q2"]
    assert bench._labels([P("runs/peer-l0.0018/ckpt.pth.tar"), P("runs/peer-l0.0006/ckpt.pth.tar")]) \
        == ["peer-l0.0018", "peer-l0.0006"]
    assert bench._labels([P("x/ckpt.pth.tar"), P("x/ckpt.pth.tar")]) == ["x#1", "x#2"]


def test_cli_force_removes_an_earlier_runs_other_results(cli, images, tmp_path):
    """With --force, a codec's JSON (or BD-rate table) left by an earlier run with other
    codecs is removed, so the folder holds one run's results; files the bench did not
    write are kept, JSON ones included."""
    out = tmp_path / "res"
    rc, _, err = cli("bench", images, "--codecs", "jpeg,webp", "--limit", "1", "-o", out)
    assert rc == 0, err
    assert (out / "webp.json").exists()
    (out / "notes.json").write_text('{"name": "mine", "results": {}}')
    (out / "keep.txt").write_text("mine")
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--limit", "1", "-o", out, "--force")
    assert rc == 0, err
    assert not (out / "webp.json").exists()
    assert f"hvqc: removed {out / 'webp.json'}" in err
    assert (out / "notes.json").read_text() == '{"name": "mine", "results": {}}'
    assert (out / "keep.txt").read_text() == "mine"
    assert {"jpeg.json", "bd_rate.json", "summary.md"} <= {p.name for p in out.iterdir()}
    assert "WebP" not in (out / "summary.md").read_text()


def test_cli_keep_carries_an_earlier_runs_codec(cli, images, tmp_path):
    """--keep takes a codec's per-image rows from the earlier results in -o instead of
    running it (a peer whose checkpoint is gone): the rows, BD-rates and tables are as
    if it had run, and it is marked as kept; it gets no crop panel."""
    out = tmp_path / "res"
    rc, _, err = cli("bench", images, "--codecs", "jpeg,webp", "--limit", "2", "-o", out)
    assert rc == 0, err
    before = json.loads((out / "webp.json").read_text())
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--keep", "webp", "--limit", "2",
                     "-o", out, "--force")
    assert rc == 0, err
    after = json.loads((out / "webp.json").read_text())
    assert after["per_image"] == before["per_image"] and after["results"] == before["results"]
    assert after["description"].endswith("kept from an earlier run (not measured again)")
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["codec"] for r in rows} == {"jpeg", "webp"}
    assert len(rows) == 2 * (len(bench.JPEG.settings) + len(bench.WebP.settings))
    assert "## WebP" in (out / "summary.md").read_text()
    # kept again, it is marked once
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--keep", "webp", "--limit", "2",
                     "-o", out, "--force")
    assert rc == 0, err
    again = json.loads((out / "webp.json").read_text())
    assert again["description"] == after["description"] and again["per_image"] == before["per_image"]
    # the earlier results must cover every image and setting of this run
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--keep", "webp", "-o", out, "--force")
    _one_error(rc, err, "--keep webp", "lack", "c.png")


def test_cli_keep_errors(cli, images, tmp_path):
    out = tmp_path / "res"
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--limit", "1", "-o", out)
    assert rc == 0, err
    snapshot = {p.name: p.read_bytes() for p in out.iterdir()}
    for keep, fragments in (("avif", ("--keep avif", "no ", "avif.json")),
                            ("jpeg", ("--keep jpeg", "also run")),
                            ("summary", ("--keep summary", "no "))):
        rc, _, err = cli("bench", images, "--codecs", "jpeg", "--keep", keep, "--limit", "1",
                         "-o", out, "--force")
        _one_error(rc, err, *fragments)
    (out / "bd_rate.json").rename(out / "bad.json")
    rc, _, err = cli("bench", images, "--codecs", "jpeg", "--keep", "bad", "--limit", "1",
                     "-o", out, "--force")
    _one_error(rc, err, "--keep bad", "not a bench result")
    (out / "bad.json").rename(out / "bd_rate.json")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot    # nothing written


def test_lambda_entry_measures_the_files_encode_lambda_writes(tiny, images, photo_img, tmp_path, monkeypatch):
    """``hvqc-rd``: every lambda of the ladder, the bytes ``hvqc encode --lambda`` writes;
    the image's cuts are scored once and each setting is charged that encode's time."""
    from hvqc import zoo
    from hvqc.search import SearchSettings
    monkeypatch.setattr(zoo, "load", lambda name: tiny)
    s = SearchSettings(steps=2, lr=0.1)
    monkeypatch.setattr(bench.HvqcRDCodec, "LAMBDAS", (1e-6, 0.03, 0.3, 1e6))   # the tiny model's slopes
    codecs = bench.make_codecs(["hvqc", "hvqc-rd", "jpeg"], "tiny", search=s)
    assert [c.key for c in codecs] == ["hvqc", "hvqc-search", "hvqc-rd", "hvqc-rd-search", "jpeg"]
    rd, rds = codecs[2], codecs[3]
    assert rd.settings == (1e-6, 0.03, 0.3, 1e6) and rd.label(1.6) == "lambda 1.6"
    assert rds.name == "hvqc (tiny, per-image lambda, search 2)"
    calls = []
    real = codec_mod.scored_cuts
    monkeypatch.setattr(codec_mod, "scored_cuts", lambda *a, **k: calls.append(1) or real(*a, **k))
    rows = [bench.measure(rd, photo_img, lam)[0] for lam in rd.settings]
    assert len(calls) == 1                                  # scored once for the whole ladder
    for lam, row in zip(rd.settings, rows):
        want = codec_mod.compress_image_rd(tiny, photo_img, lam)[0]
        assert row["bytes"] == len(want) and row["codec"] == "hvqc-rd"
        assert row["encoding_time"] >= rows[0]["encoding_time"] * 0.999
    assert len({r["bytes"] for r in rows}) > 1
    assert [r["bytes"] for r in rows] == sorted((r["bytes"] for r in rows), reverse=True)
    assert rds.settings == (1e-6, 0.03, 0.3, 1e6) and "rate weight lambda" in rds.description
    calls.clear()                                           # searched: one encode per lambda
    for lam in rds.settings:
        row = bench.measure(rds, photo_img, lam)[0]
        want = codec_mod.compress_image_rd(tiny, photo_img, lam, search=s)[0]
        assert row["bytes"] == len(want) and row["codec"] == "hvqc-rd-search"
    assert len(calls) == 2 * len(rds.settings)              # the bench's and this test's
    res = bench.run(sorted(images.glob("*.png"))[:1], [codecs[0], rd, codecs[4]], progress=False)
    paths = {p.name for p in bench.write_outputs(res, tmp_path)}
    assert {"hvqc-rd.json", "bd_rate.json", "bd_rate-hvqc-rd.json"} <= paths
    bd = json.loads((tmp_path / "bd_rate-hvqc-rd.json").read_text())
    assert bd["test"] == "hvqc-rd" and set(bd["against"]) == {"hvqc", "jpeg"}
