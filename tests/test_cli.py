"""Tests for the ``hvqc`` command line, run as a real subprocess.

Every invocation starts a fresh interpreter (a second or more for importing torch),
so the tests share encoded files through module-scoped fixtures.
"""
import json
import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hvqc import api, bitstream

KODIM = "examples/kodim23.png"


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


def assert_one_error_line(rc, stderr, *fragments):
    assert rc != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("hvqc: error:"), lines[0]
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"


@pytest.fixture(scope="module")
def work(tmp_path_factory, cli, photo_path):
    """The test photo encoded by the CLI at the default level and at level 3."""
    d = tmp_path_factory.mktemp("cli")
    src = d / "photo.png"
    shutil.copy(photo_path, src)
    rc, out, err = cli("encode", src, "--model", "tiny")          # default output: photo.hvqc
    assert (rc, err) == (0, ""), err
    rc, out, err = cli("encode", src, "-m", "tiny", "--level", "3", "-o", d / "l3.hvqc")
    assert (rc, err) == (0, ""), err
    return d


def test_help_lists_commands(cli):
    rc, out, err = cli("--help")
    assert rc == 0, err
    for cmd in ("encode", "decode", "info", "models"):
        assert f" {cmd} " in out, f"{cmd} missing from --help:\n{out}"


def test_models_lists_the_installed_model(cli):
    rc, out, err = cli("models")
    assert rc == 0, err
    assert out.startswith("tiny  (image, weights db303489)")
    assert "level 3: stride 16, 16 codes" in out


def test_encode_writes_what_the_api_writes(work, tiny, photo_path):
    assert files_in(work) == ["l3.hvqc", "photo.hvqc", "photo.png"]
    data = (work / "photo.hvqc").read_bytes()
    assert data == api.compress(photo_path, tiny, level=1)
    assert (work / "l3.hvqc").read_bytes() == api.compress(photo_path, tiny, level=3)


def test_decode_to_png(work, cli, tmp_path):
    dst = tmp_path / "out.png"
    rc, out, err = cli("decode", work / "photo.hvqc", "-o", dst)
    assert (rc, err) == (0, ""), err
    img = Image.open(dst)
    assert img.format == "PNG" and img.size == (96, 64) and img.mode == "RGB"
    want = api.decompress((work / "photo.hvqc").read_bytes())
    assert np.array_equal(np.asarray(img), np.asarray(want))
    assert files_in(tmp_path) == ["out.png"]                       # no temporary left behind


def test_info_json(work, cli):
    path = work / "photo.hvqc"
    rc, out, err = cli("info", "--json", path)
    assert (rc, err) == (0, ""), err
    d = json.loads(out)
    assert {"model", "width", "height", "levels", "total_bytes"} <= set(d)
    assert (d["model"], d["width"], d["height"], d["mode"]) == ("tiny", 96, 64, "RGB")
    assert [lv["level"] for lv in d["levels"]] == [3, 2, 1]
    segs = bitstream.read(path.read_bytes()).segments
    assert [lv["payload_bytes"] for lv in d["levels"]] == [len(s) for s in segs]
    assert all(set(lv) == {"level", "payload_bytes"} for lv in d["levels"])
    assert d["total_bytes"] == path.stat().st_size
    assert d["header_bytes"] + d["payload_bytes"] + d["extra_bytes"] == d["total_bytes"]
    colour = bitstream.read(path.read_bytes()).extras[bitstream.COLOUR_TAG]
    assert d["colour_bytes"] == len(colour) and d["extra_bytes"] == len(colour)   # RGB: no alpha
    rc, out, err = cli("info", path)
    assert rc == 0 and f"colour     {len(colour)} bytes" in out, err


def test_level_3_is_smaller(work):
    assert (work / "l3.hvqc").stat().st_size < (work / "photo.hvqc").stat().st_size
    assert bitstream.read((work / "l3.hvqc").read_bytes()).header.levels == (3,)


def test_lambda_writes_the_cut_the_api_picks(work, cli, tmp_path, tiny):
    for lam in ("1e-6", "0.3"):
        rc, out, err = cli("encode", work / "photo.png", "-m", "tiny", "--lambda", lam,
                           "-o", tmp_path / f"{lam}.hvqc")
        assert (rc, out, err) == (0, "", ""), err
        got = (tmp_path / f"{lam}.hvqc").read_bytes()
        assert got == api.compress(work / "photo.png", tiny, lam=float(lam))
        rc, _, err = cli("decode", tmp_path / f"{lam}.hvqc", "-o", tmp_path / f"{lam}.png")
        assert rc == 0 and Image.open(tmp_path / f"{lam}.png").size == (96, 64), err


def test_bpp_target(work, cli, tmp_path, plain, tiny):
    from hvqc.codec import file_cuts
    px = 96 * 64
    full = (work / "photo.hvqc").read_bytes()
    l2 = api.compress(work / "photo.png", tiny, level=2)         # with its own colour correction
    target = 8 * len(l2) / px + 1e-3            # above level 2, below its first refinement
    finer = {(lv, g): d for d, lv, g in file_cuts(plain(full), tiny)}[(1, 1)]
    assert 8 * len(full) / px > 8 * len(finer) / px > target
    rc, out, err = cli("encode", work / "photo.png", "-m", "tiny", "--bpp", target,
                       "-o", tmp_path / "a.hvqc")
    assert (rc, err) == (0, ""), err
    got = (tmp_path / "a.hvqc").read_bytes()
    assert got == l2
    assert 8 * len(got) / px <= target
    # Out of reach: the coarsest level, with a note (not an error).
    rc, out, err = cli("encode", work / "photo.png", "-m", "tiny", "--bpp", "0.001",
                       "-o", tmp_path / "b.hvqc")
    assert rc == 0, err
    assert err.startswith("hvqc: note:") and "no level reaches 0.001 bpp" in err
    assert len(err.strip().splitlines()) == 1
    assert "(level 3, 1 of 4 groups," in err
    coarsest = bitstream.read((tmp_path / "b.hvqc").read_bytes()).header
    assert (coarsest.levels, coarsest.groups) == ((3,), 1)
    rc, out, err = cli("info", tmp_path / "b.hvqc")
    assert rc == 0 and "refinement level 3: its first 1 coding groups" in out, err
    rc, out, err = cli("info", tmp_path / "b.hvqc", "--json")
    assert rc == 0 and json.loads(out)["groups"] == 1, err


def test_batch_encode_and_decode(work, cli, tmp_path, photo_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.open(photo_path).convert("L").save(folder / "gray.png")
    Image.open(photo_path).resize((40, 30)).save(folder / "small.jpg")
    (folder / "notes.txt").write_text("not an image")             # ignored: not an image suffix
    out = tmp_path / "coded"                                       # created on demand
    rc, _, err = cli("encode", work / "photo.png", folder, "-m", "tiny", "-o", out)
    assert rc == 0 and "hvqc:" not in err, err                     # stderr: a progress bar only
    assert files_in(out) == ["gray.hvqc", "photo.hvqc", "small.hvqc"]
    assert (out / "photo.hvqc").read_bytes() == (work / "photo.hvqc").read_bytes()
    rc, _, err = cli("decode", out, "-o", tmp_path / "png")
    assert rc == 0 and "hvqc:" not in err, err
    assert files_in(tmp_path / "png") == ["gray.png", "photo.png", "small.png"]
    sizes = {n: Image.open(tmp_path / "png" / n) for n in files_in(tmp_path / "png")}
    assert (sizes["gray.png"].mode, sizes["gray.png"].size) == ("L", (96, 64))
    assert (sizes["small.png"].mode, sizes["small.png"].size) == ("RGB", (40, 30))


def test_no_overwrite_without_force(work, cli, tmp_path):
    dst = tmp_path / "x.hvqc"
    dst.write_bytes(b"keep me")
    rc, out, err = cli("encode", work / "photo.png", "-m", "tiny", "-o", dst)
    assert_one_error_line(rc, err, "--force")
    assert dst.read_bytes() == b"keep me"
    assert files_in(tmp_path) == ["x.hvqc"]
    rc, out, err = cli("encode", work / "photo.png", "-m", "tiny", "-o", dst, "--force")
    assert (rc, err) == (0, ""), err
    assert dst.read_bytes() == (work / "photo.hvqc").read_bytes()
    assert files_in(tmp_path) == ["x.hvqc"]


def _truncated(data):
    return data[: len(data) - 7]


def _flipped(data):
    b = bytearray(data)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def _unknown_model(data):
    from dataclasses import replace
    c = bitstream.read(data)
    return bitstream.write(replace(c, header=replace(c.header, model="nosuch")))


# name -> (how to make the input, arguments after the input, output name, message fragments)
NEGATIVE = {
    "missing_input": (None, ["encode", "{in}/missing.png", "-m", "tiny", "-o", "{out}/x.hvqc"],
                      ["no such file", "missing.png"]),
    "text_as_png": ("text", ["encode", "{in}/fake.png", "-m", "tiny", "-o", "{out}/x.hvqc"],
                    ["not an image file"]),
    "truncated_hvqc": (_truncated, ["decode", "{in}/bad.hvqc", "-o", "{out}/x.png"],
                       ["truncated file"]),
    "flipped_byte": (_flipped, ["decode", "{in}/bad.hvqc", "-o", "{out}/x.png"],
                     ["CRC32 mismatch"]),
    "unknown_model_option": (None, ["encode", "{photo}", "--model", "nosuch", "-o", "{out}/x.hvqc"],
                             ["unknown model 'nosuch'"]),
    "level_7": (None, ["encode", "{photo}", "-m", "tiny", "--level", "7", "-o", "{out}/x.hvqc"],
                ["level must be in 1..3"]),
    "level_and_bpp": (None, ["encode", "{photo}", "-m", "tiny", "--level", "2", "--bpp", "0.5",
                             "-o", "{out}/x.hvqc"], ["--level or --bpp, not both"]),
    "bpp_and_lambda": (None, ["encode", "{photo}", "-m", "tiny", "--bpp", "0.5", "--lambda", "2",
                              "-o", "{out}/x.hvqc"], ["--bpp or --lambda, not both"]),
    "lambda_zero": (None, ["encode", "{photo}", "-m", "tiny", "--lambda", "0", "-o", "{out}/x.hvqc"],
                    ["--lambda must be a positive number, got 0.0"]),
    "lambda_nan": (None, ["encode", "{photo}", "-m", "tiny", "--lambda", "nan", "-o", "{out}/x.hvqc"],
                   ["--lambda must be a positive number, got nan"]),
    "file_names_unknown_model": (_unknown_model, ["decode", "{in}/bad.hvqc", "-o", "{out}/x.png"],
                                 ["unknown model 'nosuch'"]),
}


@pytest.mark.parametrize("case", list(NEGATIVE))
def test_errors(case, work, cli, tmp_path):
    make, args, fragments = NEGATIVE[case]
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    if make == "text":
        (src / "fake.png").write_text("hello, I am not a PNG\n")
    elif make is not None:
        (src / "bad.hvqc").write_bytes(make((work / "photo.hvqc").read_bytes()))
    before = files_in(src)
    args = [a.format(**{"in": src, "out": out, "photo": work / "photo.png"}) for a in args]
    rc, stdout, stderr = cli(*args)
    assert_one_error_line(rc, stderr, *fragments)
    assert files_in(out) == []                       # no output, no temporary
    assert files_in(src) == before


# --- the shipped model (skipped until weights/ holds it) -----------------------

def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("RGB"), np.float64)
    y = np.asarray(b.convert("RGB"), np.float64)
    return 10 * np.log10(255.0 ** 2 / np.mean((x - y) ** 2))


def test_photo_model_levels(photo_weights, cli, tmp_path):
    ref = Image.open(KODIM)
    ref.load()
    coded, decoded = tmp_path / "coded", tmp_path / "decoded"
    coded.mkdir()
    for level in (1, 2, 3):
        rc, _, err = cli("encode", KODIM, "-m", "photo", "--level", level,
                         "-o", coded / f"l{level}.hvqc", weights=photo_weights)
        assert (rc, err) == (0, ""), err
    rc, _, err = cli("decode", coded, "-o", decoded, weights=photo_weights)
    assert rc == 0 and "hvqc:" not in err, err
    psnr, size = {}, {}
    for level in (1, 2, 3):
        img = Image.open(decoded / f"l{level}.png")
        assert img.size == ref.size and img.mode == "RGB"
        psnr[level] = _psnr(img, ref)
        size[level] = (coded / f"l{level}.hvqc").stat().st_size
    assert psnr[1] > psnr[3], psnr
    assert size[3] < size[1], size


def test_truncate_gives_the_level3_file_without_a_model(work, cli, tmp_path, plain):
    out = tmp_path / "cut.hvqc"
    rc, _, err = cli("truncate", work / "photo.hvqc", "--level", "3", "-o", out)
    assert (rc, err) == (0, ""), err
    assert out.read_bytes() == plain((work / "l3.hvqc").read_bytes())   # less l3's own correction
    rc, _, err = cli("truncate", work / "photo.hvqc", "--level", "3", "-o", out)
    assert_one_error_line(rc, err, "--force")
    rc, _, err = cli("truncate", work / "l3.hvqc", "--level", "1", "-o", tmp_path / "x.hvqc")
    assert_one_error_line(rc, err, "cannot truncate")
    assert not (tmp_path / "x.hvqc").exists()


# --- review regressions: outputs, limits, the registry --------------------------

def _umask_mode():
    import os
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def test_outputs_get_the_usual_file_mode(work, cli, tmp_path):
    # The temporary file is made private (0o600); the renamed output must not stay so.
    rc, _, err = cli("encode", work / "photo.png", "-m", "tiny", "-o", tmp_path / "a.hvqc")
    assert (rc, err) == (0, ""), err
    rc, _, err = cli("decode", tmp_path / "a.hvqc", "-o", tmp_path / "a.png")
    assert (rc, err) == (0, ""), err
    for name in ("a.hvqc", "a.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == _umask_mode(), name


@pytest.mark.parametrize("args, fragment", [
    (["{a}", "{b}", "-m", "tiny"], "two inputs would both write"),
    (["{photo}", "{a}", "-m", "tiny", "--level", "0"], "--level must be in 1..3 for model 'tiny', got 0"),
    (["{photo}", "{a}", "--model", "nosuch"], "unknown model 'nosuch'"),
])
def test_refused_batch_creates_nothing(work, cli, tmp_path, args, fragment):
    for d in ("d1", "d2"):
        (tmp_path / d).mkdir()
        shutil.copy(work / "photo.png", tmp_path / d / "a.png")
    names = {"a": tmp_path / "d1" / "a.png", "b": tmp_path / "d2" / "a.png", "photo": work / "photo.png"}
    out = tmp_path / "out"
    rc, _, err = cli("encode", *[a.format(**names) for a in args], "-o", out)
    assert_one_error_line(rc, err, fragment)              # one line, not one per input
    assert not out.exists()                               # the -o folder was not made


def test_output_that_is_an_input_is_refused_even_with_force(work, cli, tmp_path):
    other = tmp_path / "photo.hvqc"                       # an input that photo.png's output would hit
    other.write_bytes(b"keep me")
    shutil.copy(work / "photo.png", tmp_path / "photo.png")
    rc, _, err = cli("encode", tmp_path / "photo.png", other, "-m", "tiny", "--force")
    assert_one_error_line(rc, err, "would overwrite an input")
    assert other.read_bytes() == b"keep me"
    rc, _, err = cli("decode", tmp_path / "photo.png")     # a PNG given to decode: no "use --force"
    assert_one_error_line(rc, err, "would overwrite an input")
    assert files_in(tmp_path) == ["photo.hvqc", "photo.png"]


def test_output_ending_in_a_separator_is_a_folder(work, cli, tmp_path):
    rc, _, err = cli("encode", work / "photo.png", "-m", "tiny", "-o", f"{tmp_path / 'new'}/")
    assert_one_error_line(rc, err, "output folder does not exist")
    assert files_in(tmp_path) == []                       # no file called "new"
    (tmp_path / "new").mkdir()
    rc, _, err = cli("encode", work / "photo.png", "-m", "tiny", "-o", f"{tmp_path / 'new'}/")
    assert (rc, err) == (0, ""), err
    assert files_in(tmp_path / "new") == ["photo.hvqc"]


def test_decode_writes_png_names_only(work, cli, tmp_path):
    rc, _, err = cli("decode", work / "photo.hvqc", "-o", tmp_path / "x.jpg")
    assert_one_error_line(rc, err, "must end in .png")
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(work / "photo.hvqc", folder)
    rc, _, err = cli("decode", folder, "-o", tmp_path / "x.png")  # a folder input: -o is a folder
    assert_one_error_line(rc, err, "must be a folder")
    assert files_in(tmp_path) == ["in"]


def _png_header(w, h):
    """A PNG whose header claims w x h; its pixel data is junk (must never be read)."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("w, h", [(100000, 100000), (10000, 10000), (8000, 6000), (70000, 1)])
def test_huge_png_header_is_refused_before_decoding(cli, tmp_path, w, h):
    src = tmp_path / "huge.png"
    src.write_bytes(_png_header(w, h))
    rc, _, err = cli("encode", src, "-m", "tiny", "-o", tmp_path / "x.hvqc")
    assert_one_error_line(rc, err, "image too large")     # no Pillow warning lines either
    assert files_in(tmp_path) == ["huge.png"]


def test_models_checks_the_weights(cli, tmp_path, photo_path):
    from conftest import TINY_WEIGHTS
    missing, tampered, broken = tmp_path / "missing", tmp_path / "tampered", tmp_path / "broken"
    shutil.copytree(TINY_WEIGHTS, tampered)
    with open(tampered / "tiny.safetensors", "ab") as f:
        f.write(b"x")
    missing.mkdir()
    shutil.copy(TINY_WEIGHTS / "manifest.json", missing)
    broken.mkdir()
    (broken / "manifest.json").write_text('{"models": ')
    for folder, fragment in [(missing, "weights for model 'tiny' missing"),
                             (tampered, "weights for model 'tiny' fail verification"),
                             (broken, "is unreadable")]:
        rc, out, err = cli("models", weights=folder)
        assert_one_error_line(rc, err, fragment)
        if folder is not broken:
            assert out.startswith("tiny  (image")        # still listed
    rc, _, err = cli("encode", photo_path, "-m", "tiny", "-o", tmp_path / "x.hvqc", weights=tampered)
    assert_one_error_line(rc, err, "fail verification")
    assert not (tmp_path / "x.hvqc").exists()


def test_train_refuses_bad_options_before_training(cli, tmp_path):
    """``--freeze`` is for image recipes and must leave a level to train; nothing is written."""
    rc, out, err = cli("train", "speech", "--freeze", "1", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--freeze is for the image recipes only")
    rc, out, err = cli("train", "nosuch", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "nosuch")
    rc, out, err = cli("train", "photo-priors", "--rate-weight", "2", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--rate-weight is for the decode stage (X-decode) only")
    rc, out, err = cli("train", "photo-decode", "--rate-weight", "-1", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--rate-weight must be 0 or more, got -1")
    for recipe in ("speech", "mnist-priors", "faces-priors"):      # every recipe checks it
        rc, out, err = cli("train", recipe, "--rate-weight", "2", "--run", tmp_path / "r")
        assert_one_error_line(rc, err, "--rate-weight is for the decode stage (X-decode) only")
    rc, out, err = cli("train", "faces-decode", "--rate-weight", "-1", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--rate-weight must be 0 or more, got -1")   # faces passes it on
    rc, out, err = cli("train", "photo-priors", "--levels", "1", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--levels is for the photo-code-priors recipe only")
    rc, out, err = cli("train", "photo-code-priors", "--levels", "1,x", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--levels must be comma-separated level numbers, got '1,x'")
    rc, out, err = cli("train", "photo-code-priors", "--levels", "1,4", "--run", tmp_path / "r")
    assert_one_error_line(rc, err, "--levels must name distinct levels in 1..3, got 1,4")
    assert not (tmp_path / "r").exists()


def test_train_refuses_a_bad_device_or_budget(cli, tmp_path):
    """``--device`` and ``--seconds`` are checked before any data is read or folder made."""
    import torch
    cases = [(("--device", "tpu"), "--device must be cpu, cuda or cuda:N"),
             (("--seconds", "-1"), "--seconds must be 0 or more"),
             (("--steps", "0"), "--steps must be 1 or more")]
    if not torch.cuda.is_available():
        cases.append((("--device", "cuda"), "no CUDA device is available here"))
    for args, fragment in cases:
        rc, out, err = cli("train", "photo", *args, "--run", tmp_path / "r")
        assert_one_error_line(rc, err, fragment)
        assert not (tmp_path / "r").exists()


_RSS_AFTER_FREE = """
import sys
import numpy as np
from hvqc.runtime import tune_allocator
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
applied = tune_allocator() if sys.argv[1] == "tuned" else False
base = rss()
a = np.ones(64 << 20, dtype=np.uint8)        # 64 MiB, touched
del a
print(applied, rss() - base)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not os.path.exists("/proc/self/statm"),
                    reason="glibc's allocator on Linux only")
def test_tuned_allocator_keeps_freed_memory_for_reuse():
    """Untuned, glibc returns a freed 64 MiB block to the system at once (it came from
    its own mmap); tuned, the block came from the heap and stays there for the next
    allocation. The command line tunes it before any work. (The children run without
    glibc's MALLOC_ variables, which would tune the plain one too.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    kept = {}
    for mode in ("plain", "tuned"):
        out = subprocess.run([sys.executable, "-c", _RSS_AFTER_FREE, mode], capture_output=True,
                             text=True, check=True, env=env).stdout.split()
        kept[mode] = (out[0], int(out[1]))
    assert kept["plain"][0] == "False" and kept["plain"][1] < 16 << 20
    assert kept["tuned"][0] == "True" and kept["tuned"][1] > 48 << 20


def test_the_command_tunes_the_allocator_first(monkeypatch):
    from hvqc import cli, runtime

    calls = []
    monkeypatch.setattr(runtime, "tune_allocator", lambda: calls.append("tuned") or True)
    monkeypatch.setattr(cli, "app", lambda: calls.append("ran"))
    monkeypatch.setattr(sys, "argv", ["hvqc", "models"])
    cli.main()
    assert calls == ["tuned", "ran"]
