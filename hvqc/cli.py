"""The ``hvqc`` command line: argument handling and messages only.

Every user mistake ends in one line on stderr and exit status 1 (2 for usage);
outputs are written to a temporary file and renamed into place, so a failure never
leaves a partial file, and an existing file is never replaced without ``--force``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="hvqc: a hierarchical VQ-VAE codec (images and speech) with learned priors.")


class UserError(Exception):
    """A problem to report in one line, without a traceback."""


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"hvqc: error: {msg}", err=True)
    raise typer.Exit(code)


def _file_mode() -> int:
    """Permissions of a newly created file under the current umask (e.g. 0o644)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the target folder, then rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=".hvqc-", suffix=".part", dir=path.parent)
    try:
        os.chmod(tmp, _file_mode())        # mkstemp makes 0o600; outputs get the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _expand(inputs: List[Path], suffixes: set[str]) -> tuple[list[Path], bool]:
    """Files from the arguments (folders expanded, sorted); and whether it is a batch."""
    files: list[Path] = []
    batch = len(inputs) > 1
    for p in inputs:
        if p.is_dir():
            batch = True
            files += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"no such file: {p}")
    if not files:
        raise UserError("no input files found")
    return files, batch


def _plan(files: list[Path], batch: bool, out: Optional[str], suffix: str, force: bool) -> list[tuple[Path, Path]]:
    """Pair each input with its output path and refuse bad or overwriting outputs before
    any work. Creates nothing: :func:`_make_folders` makes a batch's ``-o`` folder once
    everything else has been checked. An ``-o`` ending in a separator names a folder."""
    to_folder = False
    if batch:
        if out is None:
            pairs = [(f, f.with_suffix(suffix)) for f in files]
        else:
            folder = Path(out)
            if folder.exists() and not folder.is_dir() or (not folder.exists()
                                                            and folder.suffix.lower() == suffix):
                raise UserError(f"-o {out} must be a folder when there are several inputs")
            pairs = [(f, folder / (f.stem + suffix)) for f in files]
            to_folder = True
    else:
        target = Path(out) if out is not None else files[0].with_suffix(suffix)
        if out is not None and (out.endswith(("/", os.sep)) or target.is_dir()):
            if not target.is_dir():
                raise UserError(f"output folder does not exist: {out}")
            target = target / (files[0].stem + suffix)
        pairs = [(files[0], target)]
    inputs = {f.resolve() for f in files}
    seen = set()
    for src, dst in pairs:
        if dst.resolve() in inputs:
            raise UserError(f"output {dst} would overwrite an input")
        if dst.resolve() in seen:
            raise UserError(f"two inputs would both write {dst}")
        seen.add(dst.resolve())
        if dst.is_dir():
            raise UserError(f"output {dst} is a folder")
        if dst.exists() and not force:
            raise UserError(f"{dst} exists (use --force to overwrite)")
        if not to_folder and not dst.parent.is_dir():
            raise UserError(f"output folder does not exist: {dst.parent}")
    return pairs


def _make_folders(pairs: list[tuple[Path, Path]]) -> None:
    for folder in sorted({dst.parent for _, dst in pairs}):
        folder.mkdir(parents=True, exist_ok=True)


def _run(pairs, work, desc: str) -> None:
    """Apply ``work(src, dst)`` to each pair with a progress bar when there are several;
    report each failure in one line and exit non-zero if any failed."""
    from tqdm import tqdm
    from .errors import user_message
    failed = 0
    for src, dst in tqdm(pairs, desc=desc, disable=True if len(pairs) < 2 else None, file=sys.stderr, leave=False):
        try:
            work(src, dst)
        except Exception as e:  # noqa: BLE001 - reported in one line below
            msg = user_message(e)
            if msg is None:
                if os.environ.get("HVQC_DEBUG"):
                    raise
                msg = f"internal error ({type(e).__name__}: {e}); set HVQC_DEBUG=1 for a traceback"
            typer.echo(f"hvqc: error: {src}: {msg}", err=True)
            failed += 1
    if failed:
        raise typer.Exit(1)


def _check_steps(search: int) -> None:
    if search < 0:
        raise UserError(f"--search must be 0 or more steps, got {search}")


def _plan_encode(inputs, output, suffixes, force: bool, model: str, modality: str,
                 level: Optional[int], rate_flag: str, rate: Optional[float], search: int = 0,
                 lam: Optional[float] = None):
    """The checks every encode command makes before any work: level, rate or lambda,
    search steps, inputs and outputs, the model and its modality. Returns ``(pairs,
    loaded model)``."""
    given = [f for f, v in (("--level", level), (rate_flag, rate), ("--lambda", lam)) if v is not None]
    if len(given) > 1:
        raise UserError(f"give {' or '.join(given)}, not both" if len(given) == 2 else
                        f"give one of {', '.join(given[:-1])} and {given[-1]}")
    if rate is not None and not rate > 0:
        raise UserError(f"{rate_flag} must be positive")
    if lam is not None and not 0 < lam < float("inf"):
        raise UserError(f"--lambda must be a positive number, got {lam}")
    _check_steps(search)
    files, batch = _expand(inputs, suffixes)
    pairs = _plan(files, batch, output, ".hvqc", force)
    from .zoo import load
    lm = load(model)
    if lm.modality != modality:
        a = {"image": "an image", "speech": "a speech"}
        raise UserError(f"model {lm.name!r} is {a.get(lm.modality, lm.modality)} model, not "
                        f"{a[modality]} model" + ("" if lm.modality == "image" else
                                                  f": use `hvqc {lm.modality} encode`"))
    n = lm.model.num_levels
    if level is not None and not 1 <= level <= n:
        raise UserError(f"--level must be in 1..{n} for model {lm.name!r}, got {level}")
    if search:
        from .codec import check_search
        check_search(lm, level or 1)
    _make_folders(pairs)
    return pairs, lm


@app.command()
def encode(inputs: List[Path] = typer.Argument(..., help="Image files or folders."),
           output: Optional[str] = typer.Option(None, "-o", "--output",
                                                help="Output file (one input) or folder."),
           model: str = typer.Option("photo", "--model", "-m", help="Model name (see `hvqc models`)."),
           level: Optional[int] = typer.Option(None, "--level", "-l",
                                               help="Finest level to transmit (1 = best quality)."),
           bpp: Optional[float] = typer.Option(None, "--bpp",
                                               help="Target rate: the finest level, or refinement "
                                               "between levels, at or below it."),
           lam: Optional[float] = typer.Option(None, "--lambda", metavar="LAMBDA",
                                               help="Rate-distortion slope: per image, the level "
                                               "or refinement with the least distortion + LAMBDA "
                                               "x bpp (each decoded once to score it; about 1 "
                                               "to 10 for photo). With --search, each level's "
                                               "codes are searched for the same trade-off."),
           joint: Optional[bool] = typer.Option(None, "--joint/--split",
                                                help="One coder stream for all levels (smaller "
                                                "for tiny images) or one per level (cut without "
                                                "a model). Default: the model's choice."),
           search: int = typer.Option(0, "--search", metavar="STEPS",
                                      help="Search this many steps for better codes than the "
                                      "encoder's (same decoder and format; about 10 is enough, "
                                      "each step costing about one plain encode)."),
           force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs.")):
    """Compress images into .hvqc files."""
    from .api import compress_file
    from .image import IMAGE_SUFFIXES
    try:
        pairs, lm = _plan_encode(inputs, output, IMAGE_SUFFIXES, force, model, "image",
                                 level, "--bpp", bpp, search, lam)
    except Exception as e:  # noqa: BLE001
        _report(e)

    def work(src: Path, dst: Path) -> None:
        res = compress_file(src, lm, level=level, bpp=bpp, joint=joint, search=search, lam=lam)
        if res.note:
            typer.echo(f"hvqc: note: {src}: {res.note}", err=True)
        _atomic_write(dst, lambda f: f.write(res.data))

    _run(pairs, work, "encode")


def _plan_decode(inputs, output, level: Optional[int], force: bool, suffix: str,
                 allowed: set, what: str):
    """The checks every decode command makes before any work; returns the pairs."""
    if level is not None and level < 1:
        raise UserError(f"--level must be 1 or more, got {level}")
    files, batch = _expand(inputs, {".hvqc"})
    pairs = _plan(files, batch, output, suffix, force)
    for _, dst in pairs:
        if dst.suffix.lower() not in allowed:
            raise UserError(f"{what}: the output name must end in {suffix}, got {dst}")
    _make_folders(pairs)
    return pairs


@app.command()
def decode(inputs: List[Path] = typer.Argument(..., help=".hvqc files or folders."),
           output: Optional[str] = typer.Option(None, "-o", "--output",
                                                help="Output PNG (one input) or folder."),
           level: Optional[int] = typer.Option(None, "--level", "-l",
                                               help="Decode a coarser level than the file's finest."),
           force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs.")):
    """Decode .hvqc files to PNG (original size and mode)."""
    from .api import decompress
    try:
        pairs = _plan_decode(inputs, output, level, force, ".png", {".png"}, "decode writes PNG")
    except Exception as e:  # noqa: BLE001
        _report(e)

    def work(src: Path, dst: Path) -> None:
        img = decompress(src.read_bytes(), level=level)
        _atomic_write(dst, lambda f: img.save(f, format="PNG"))

    _run(pairs, work, "decode")


@app.command()
def info(file: Path = typer.Argument(..., help="An .hvqc file."),
         as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Show a file's header without loading a model."""
    from .api import describe
    try:
        d = describe(file.read_bytes())
    except Exception as e:  # noqa: BLE001
        _report(e)
    if as_json:
        typer.echo(json.dumps(d))
        return
    typer.echo(f"model      {d['model']} (weights {d['weights_hash']})")
    if d["modality"] == "speech":
        typer.echo(f"speech     {d['frames']} frames of 10 ms, {d['sample_rate']} Hz"
                   + (f", {d['samples']} samples ({d['seconds']:.3f} s)" if d.get("samples") else ""))
    else:
        typer.echo(f"image      {d['width']}x{d['height']} {d['mode']}")
    if d["stream"] == "joint":
        typer.echo(f"levels     {', '.join(str(lv['level']) for lv in d['levels'])} "
                   f"(one joint stream, {d['payload_bytes']} bytes)")
    for lv in d["levels"] if d["stream"] == "split" else []:
        typer.echo(f"level {lv['level']}    {lv['payload_bytes']} bytes")
    if d["groups"]:
        typer.echo(f"refinement level {d['levels'][-1]['level']}: its first {d['groups']} coding groups")
    if d["colour_bytes"]:
        typer.echo(f"colour     {d['colour_bytes']} bytes (the finest cut's colour correction)")
    typer.echo(f"header     {d['header_bytes']} bytes")
    if d["modality"] == "speech":
        rate = f" ({d['bps']:.0f} bits/s)" if d.get("bps") is not None else ""
        typer.echo(f"total      {d['total_bytes']} bytes{rate}")
    else:
        typer.echo(f"total      {d['total_bytes']} bytes ({d['bpp']:.4f} bpp)")


@app.command()
def truncate(file: Path = typer.Argument(..., help="An .hvqc file."),
             level: int = typer.Option(..., "--level", "-l", help="Finest level to keep."),
             output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file."),
             force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing output.")):
    """Drop the levels below --level from a file: a lower-rate file (no model needed,
    except for a joint-stream file, which is re-coded with its model)."""
    from .api import truncate as cut
    try:
        if output is None:
            output = file.with_name(f"{file.stem}.l{level}.hvqc")
        (_, dst), = _plan([file], False, str(output), ".hvqc", force)
        data = cut(file.read_bytes(), level)
        _atomic_write(dst, lambda f: f.write(data))
    except Exception as e:  # noqa: BLE001
        _report(e)


@app.command()
def sample(output: Path = typer.Option(..., "-o", "--output",
                                       help="A .png (one grid) or a folder (one PNG per sample)."),
           model: str = typer.Option("photo", "--model", "-m", help="Model name."),
           n: int = typer.Option(16, "-n", help="Number of samples."),
           temperature: float = typer.Option(1.0, "--temperature", "-t", help="Prior temperature."),
           seed: int = typer.Option(0, "--seed", help="Same seed, same images."),
           level: int = typer.Option(1, "--level", "-l",
                                     help="Finest level drawn from a prior; below it decoding is "
                                          "deterministic."),
           lower: str = typer.Option("prior", "--lower",
                                     help="prior: draw levels below the top from their conditional "
                                          "priors; decode: decode them deterministically."),
           top: str = typer.Option("prior", "--top",
                                   help="prior: top codes from the learned top prior; uniform: "
                                        "uniformly random top codes (HQA's notebook), for comparison."),
           size: Optional[str] = typer.Option(None, "--size", help="WxH of each sample "
                                              "(default: the model's sample size)."),
           force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs.")):
    """Draw new images from the top prior and decode them down the levels."""
    import math

    from .zoo import load
    try:
        if not 1 <= n <= 1024:
            raise UserError(f"-n must be in 1..1024, got {n}")
        if not temperature > 0:
            raise UserError("--temperature must be positive")
        if lower not in ("prior", "decode"):
            raise UserError(f"--lower must be prior or decode, got {lower!r}")
        if top not in ("prior", "uniform"):
            raise UserError(f"--top must be prior or uniform, got {top!r}")
        lm = load(model)
        m = lm.model
        if not 1 <= level <= m.num_levels:
            raise UserError(f"--level must be in 1..{m.num_levels} for model {lm.name!r}, got {level}")
        w, h = lm.info.get("sample_size", [256, 256])
        if size is not None:
            try:
                w, h = (int(v) for v in size.lower().split("x"))
            except ValueError:
                raise UserError(f"--size must look like 256x192, got {size!r}") from None
        if w < 1 or h < 1 or w * h > 4096 * 4096:
            raise UserError(f"--size out of range: {w}x{h}")
        grid = output.suffix.lower() == ".png"
        if grid:
            targets = [output]
        else:
            if output.exists() and not output.is_dir():
                raise UserError(f"-o {output} must be a folder or end in .png")
            targets = [output / f"sample_{i:04d}.png" for i in range(n)]
        for t in targets:
            if t.exists() and not force:
                raise UserError(f"{t} exists (use --force to overwrite)")
        if grid and not output.parent.is_dir():
            raise UserError(f"output folder does not exist: {output.parent}")
        from .sample import sample_batches
        x = sample_batches(m, w, h, n, seed=seed, temperature=temperature, lowest=level - 1,
                           lower=lower, top=top, progress=True)
        if not grid:
            output.mkdir(parents=True, exist_ok=True)
        from torchvision.utils import make_grid
        from .image import from_tensor
        if grid:
            g = make_grid(x, nrow=math.ceil(math.sqrt(n)), padding=2, pad_value=1.0)
            img = from_tensor(g[None], "RGB")
            _atomic_write(output, lambda f: img.save(f, format="PNG"))
        else:
            mode = "L" if m.config.channels == 1 else "RGB"
            for t, xi in zip(targets, x):
                img = from_tensor(xi[None], mode)
                _atomic_write(t, lambda f, img=img: img.save(f, format="PNG"))
    except Exception as e:  # noqa: BLE001
        _report(e)


@app.command()
def bench(image_dir: Optional[Path] = typer.Argument(None, help="Image folder (default: the data "
                                                     "folder's kodak/)."),
          codecs: str = typer.Option("hvqc,hvqc-rd,jpeg,webp,jpeg2000,avif", "--codecs",
                                     help="Comma-separated: hvqc (every level and half-way "
                                     "refinement), hvqc-rd (`hvqc encode --lambda` over a ladder "
                                     "of lambdas), jpeg, webp, jpeg2000, avif."),
          model: str = typer.Option("photo", "--model", "-m", help="hvqc model (every level is run)."),
          peer: Optional[List[str]] = typer.Option(None, "--peer", help="A CompressAI model, "
                                                   "NAME=CHECKPOINT (e.g. bmshj2018-factorized="
                                                   "q1.pth.tar); repeat a NAME for more rates."),
          output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                help="Results folder (default: bench-<IMAGE_DIR name>)."),
          keep: Optional[str] = typer.Option(None, "--keep", help="Comma-separated codecs (e.g. "
                                             "bmshj2018-factorized) whose results the earlier "
                                             "bench in the results folder holds: carried over, "
                                             "not measured again."),
          limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images."),
          search: int = typer.Option(0, "--search", metavar="STEPS",
                                     help="Also run hvqc and hvqc-rd with their codes searched "
                                     "for this many steps (`hvqc encode --search`), as codecs "
                                     "hvqc-search and hvqc-rd-search."),
          force: bool = typer.Option(False, "--force", "-f",
                                     help="Write into a non-empty results folder.")):
    """Bitrate against quality (PSNR, MS-SSIM) of hvqc and other codecs; BD-rates, plots."""
    from . import bench as b
    from .data import data_root
    from .search import SearchSettings
    try:
        _check_steps(search)
        folder = image_dir if image_dir is not None else data_root() / "kodak"
        files = b.list_images(folder, limit)
        names = b.parse_codecs(codecs)
        peers = b.parse_peers(peer or [])
        out = output if output is not None else Path(f"bench-{folder.name}")
        if out.exists() and not out.is_dir():
            raise UserError(f"-o {out} is not a folder")
        if out.resolve() == folder.resolve():
            raise UserError(f"-o {out} is the image folder; results go in a folder of their own")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise UserError(f"{out} exists and is not empty (use --force to write into it)")
        kept = [k.strip() for k in (keep or "").split(",") if k.strip()]
        adapters = b.make_codecs(names, model, peers, SearchSettings(steps=search), kept, out)
        res = b.run(files, adapters, progress=True)
        for note in res.notes:
            typer.echo(f"hvqc: note: {note}", err=True)
        out.mkdir(parents=True, exist_ok=True)
        written = b.write_outputs(res, out, write=_atomic_write)
        for old in b.stale_outputs(out, written):      # an earlier run's other codecs
            old.unlink()
            typer.echo(f"hvqc: removed {old} (an earlier bench's result, not rewritten by this one)",
                       err=True)
    except Exception as e:  # noqa: BLE001
        _report(e)
    typer.echo(f"{len(files)} images, {len(adapters)} codecs: {out / 'summary.md'}")


@app.command()
def analyze(model: str = typer.Option(..., "--model", "-m", help="Model to analyze: a name (see "
                                      "`hvqc models`) or a training run folder (ckpt.pt)."),
            output: Path = typer.Option(..., "-o", "--output", help="Results folder (JSON and PNG plots)."),
            labels: Optional[str] = typer.Option(None, "--labels", help="Comma-separated: phones, "
                                                 "words (speech models); classes (digit models). "
                                                 "Default: all that apply."),
            compare: Optional[str] = typer.Option(None, "--compare", help="More models, NAME,NAME: "
                                                  "the same measures, overlaid in compare.png."),
            items: Optional[int] = typer.Option(None, "--items", help="Utterances (speech, default "
                                                "500) or test digits (default 5000) scored."),
            fit_items: Optional[int] = typer.Option(None, "--fit-items", help="Training utterances "
                                                    "(default 300) or digits (default 5000) the "
                                                    "k-means clusters are fitted on."),
            clusters: int = typer.Option(100, "--clusters", help="k-means clusters (every layer)."),
            trials: int = typer.Option(3, "--trials", help="PWCCA trials of 10 folds."),
            layers: Optional[str] = typer.Option(None, "--layers", help="Only layers whose name "
                                                 "contains one of these (comma-separated)."),
            corpus: Optional[Path] = typer.Option(None, "--corpus", help="Speech corpus folder "
                                                  "(default: runs/speech/corpus)."),
            seed: int = typer.Option(0, "--seed"),
            force: bool = typer.Option(False, "--force", "-f",
                                       help="Write into a non-empty results folder.")):
    """What each layer represents: PWCCA and normalised MI against phones, words, log-mel
    features or digit classes, per layer; writes analysis.json and PNG plots."""
    try:
        if output.exists() and not output.is_dir():
            raise UserError(f"-o {output} is not a folder")
        if output.is_dir() and any(output.iterdir()) and not force:
            raise UserError(f"{output} exists and is not empty (use --force to write into it)")
        from . import analyze as an
        if clusters < 2 or trials < 1:
            raise UserError("--clusters must be 2 or more and --trials 1 or more")
        split = lambda s: [v.strip() for v in (s or "").split(",") if v.strip()]  # noqa: E731
        names = [model] + [n for n in split(compare) if n != model]
        lms = [an.load_model(n) for n in names]
        image = [lm.modality != "speech" for lm in lms]
        settings = an.Settings(labels=split(labels), clusters=clusters, trials=trials, seed=seed,
                               layers=split(layers), corpus=str(corpus or ""))
        if items is not None:
            settings.items = items
        elif all(image):
            settings.items = 5000
        if fit_items is not None:
            settings.fit_items = fit_items
        elif all(image):
            settings.fit_items = 5000
        if settings.items < 1 or settings.fit_items < 1:
            raise UserError("--items and --fit-items must be positive")
        doc = an.analyze(lms, settings, progress=True)
        paths = an.write_outputs(doc, output, write=_atomic_write)
    except Exception as e:  # noqa: BLE001
        _report(e)
    typer.echo(" ".join(str(p) for p in paths))


@app.command()
def models():
    """List the installed models, their levels and typical rates; check their weights."""
    from .zoo import ModelError, manifest, verify
    problems = []
    try:
        entries = manifest()["models"]
        if not entries:
            typer.echo("no models installed")
            return
        for name, e in entries.items():
            typer.echo(f"{name}  ({e.get('modality', 'image')}, weights {e['sha256'][:8]}): "
                       f"{e.get('description', '')}")
            for lv in e.get("levels", []):
                rate, bps = lv.get("typical_bpp"), lv.get("typical_bps")
                typer.echo(f"  level {lv['level']}: stride {lv['stride']}, {lv['codes']} codes"
                           + (f" ({lv['frame_ms']} ms)" if "frame_ms" in lv else "")
                           + (f", ~{rate:.3f} bpp" if rate is not None else "")
                           + (f", ~{bps:.0f} bits/s" if bps is not None else ""))
            try:
                verify(name, e)
            except ModelError as err:      # reported below, after the listing
                problems.append(err)
    except Exception as e:  # noqa: BLE001
        _report(e)
    if problems:                           # one line, however many models are broken
        more = f" (and {len(problems) - 1} more model(s))" if len(problems) > 1 else ""
        typer.echo(f"hvqc: error: {problems[0]}{more}", err=True)
        raise typer.Exit(1)


@app.command()
def train(recipe: str = typer.Argument("photo", help="Which model to train: photo, mnist, faces, "
                                       "their later stages (from --init) X-tune (every level "
                                       "trained further), X-top (the two top levels "
                                       "retrained on the frozen ones below), X-upper (levels above "
                                       "the first through the pixels), X-priors (priors only), "
                                       "X-decoder (the finest decoder only, on every cut) and "
                                       "X-decode (priors and decoders, on rate and every cut); "
                                       "photo-code-priors (priors on the codes of whole photos, "
                                       "levels 2-3 or --levels; --batch photos a step); "
                                       "speech (with --variant)."),
          steps: int = typer.Option(6000, help="Optimisation steps."),
          run: Optional[Path] = typer.Option(None, help="Run folder, resumed if it exists "
                                             "(default: runs/RECIPE)."),
          batch: Optional[int] = typer.Option(None, help="Batch size (default: the recipe's)."),
          crop: Optional[int] = typer.Option(None, help="Crop size for photos (default 128)."),
          seed: int = typer.Option(0),
          init: Optional[Path] = typer.Option(None, help="Start from this run's checkpoint "
                                              "(the run of the stage before) or a shipped "
                                              "model's .safetensors file."),
          variant: Optional[str] = typer.Option(None, help="speech only: down+aux (default), "
                                                "aux-only or down-only."),
          freeze: Optional[int] = typer.Option(None, help="Image models: how many bottom levels "
                                               "stay fixed (default: the stage's)."),
          device: str = typer.Option("cpu", help="Where to train: cpu, cuda or cuda:N."),
          seconds: float = typer.Option(0.0, help="Wall-clock budget in seconds (0: none); "
                                        "the schedules then follow the elapsed time and "
                                        "--steps is only a cap."),
          rate_weight: Optional[float] = typer.Option(None, help="X-decode only: distortion "
                                                      "per bpp of rate (default 2)."),
          levels: Optional[str] = typer.Option(None, help="photo-code-priors only: the levels "
                                               "whose priors train, comma-separated (default 2,3).")):
    """Train a model (resumable; also runs under torchrun)."""
    from .recipes import train_recipe
    try:
        if variant is not None and recipe != "speech":
            raise UserError("--variant is for the speech recipe only")
        if freeze is not None and recipe == "speech":
            raise UserError("--freeze is for the image recipes only")
        if rate_weight is not None and recipe == "speech":   # the image recipes check it themselves
            raise UserError("--rate-weight is for the decode stage (X-decode) only")
        level_list = None
        if levels is not None:
            if recipe != "photo-code-priors":
                raise UserError("--levels is for the photo-code-priors recipe only")
            try:
                level_list = [int(v) for v in levels.split(",")]
            except ValueError:
                raise UserError(f"--levels must be comma-separated level numbers, got {levels!r}") from None
        if recipe == "speech":
            from .speech import VARIANTS
            variant = variant or VARIANTS[0]
            if variant not in VARIANTS:
                raise UserError(f"--variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
            if run is None:
                run = Path("runs") / (f"speech-{variant}" + (f"-seed{seed}" if seed else ""))
        if seconds < 0:
            raise UserError(f"--seconds must be 0 or more, got {seconds:g}")
        if steps < 1:
            raise UserError(f"--steps must be 1 or more, got {steps}")
        import torch
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise UserError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
        if kind not in ("cpu", "cuda"):
            raise UserError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here")
        init_ck = ""
        if init is not None:
            init_ck = str(init / "ckpt.pt" if init.is_dir() else init)
            if not Path(init_ck).exists():
                raise UserError(f"no checkpoint at {init_ck}")
        opts = {k: v for k, v in dict(batch=batch, crop=crop, variant=variant, freeze=freeze,
                                         rate_weight=rate_weight, levels=level_list).items()
                if v is not None}
        opts.update(device=device, seconds=seconds)
        path = train_recipe(recipe, run or Path("runs") / recipe, steps, seed=seed, init=init_ck,
                            command=" ".join(["hvqc"] + sys.argv[1:]), **opts)
    except Exception as e:  # noqa: BLE001
        _report(e)
    typer.echo(f"checkpoint: {path}")


@app.command()
def export(run: Path = typer.Argument(..., help="Run folder with ckpt.pt."),
           name: str = typer.Option("photo", help="Model id to publish as."),
           description: str = typer.Option("", help="One line for `hvqc models`."),
           force: bool = typer.Option(False, "--force", "-f")):
    """Publish a checkpoint into weights/ (safetensors, float16) and the manifest."""
    from .publish import publish
    try:
        entry = publish(run, name, description, force)
    except Exception as e:  # noqa: BLE001
        _report(e)
    typer.echo(f"{name}: {entry['file']} sha256 {entry['sha256']}")


# ---- speech ------------------------------------------------------------------

speech_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="The speech path: WAV <-> .hvqc (model speech), data tools.")
app.add_typer(speech_app, name="speech")


@speech_app.command("corpus")
def speech_corpus(out_dir: Path = typer.Argument(..., help="Folder to create (absent or empty)."),
                  train: int = typer.Option(1000, "--train", help="Training utterances."),
                  test: int = typer.Option(100, "--test", help="Test utterances."),
                  seed: int = typer.Option(0, "--seed", help="Same seed, same files."),
                  force: bool = typer.Option(False, "--force", "-f",
                                             help="Replace a non-empty OUT_DIR.")):
    """Synthesize a speech corpus (espeak-ng, 16 kHz WAV) with word and phone timings."""
    import shutil
    tmp = None
    try:
        if train < 0 or test < 0:
            raise UserError("--train and --test must be 0 or more")
        if train + test < 1:
            raise UserError("nothing to do: --train and --test are both 0")
        if train + test > 1_000_000:
            raise UserError("at most 1000000 utterances")
        if out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"{out_dir} exists and is not a folder")
        if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
            raise UserError(f"{out_dir} is not empty (use --force to replace it)")
        target = out_dir.resolve()
        if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
            raise UserError(f"refusing to replace the current folder or one above it: {out_dir}")
        if not target.parent.is_dir():
            raise UserError(f"output folder does not exist: {target.parent}")
        from .corpus import make_corpus
        tmp = Path(tempfile.mkdtemp(prefix=".hvqc-", suffix=".part", dir=target.parent))
        index = make_corpus(tmp, train, test, seed, progress=True)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)        # mkdtemp makes 0o700
        old = tmp.with_name(tmp.name + ".old")
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old.exists():
                os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except Exception as e:  # noqa: BLE001
        _report(e)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    seconds = sum(u["duration"] for s in ("train", "test") for u in index[s])
    typer.echo(f"{out_dir}: {len(index['train'])} train + {len(index['test'])} test utterances, "
               f"{seconds / 60:.1f} minutes of speech")


WAV_SUFFIXES = {".wav", ".wave"}


@speech_app.command("encode")
def speech_encode(inputs: List[Path] = typer.Argument(..., help="WAV files or folders."),
                  output: Optional[str] = typer.Option(None, "-o", "--output",
                                                       help="Output file (one input) or folder."),
                  model: str = typer.Option("speech", "--model", "-m",
                                            help="Speech model: speech, speech-aux-only, "
                                                 "speech-down-only (see `hvqc models`)."),
                  level: Optional[int] = typer.Option(None, "--level", "-l",
                                                      help="Finest level to transmit (1 = every "
                                                           "20 ms, best quality)."),
                  kbps: Optional[float] = typer.Option(None, "--kbps",
                                                       help="Target rate: the finest level, or "
                                                            "refinement between levels, whose file "
                                                            "is at or below it."),
                  force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs.")):
    """Compress WAV audio (mono or multi-channel, 8-48 kHz, PCM or float) into .hvqc files.

    Channels are averaged to mono and resampled to 16 kHz for the model; the file keeps
    the original rate and length, which decoding restores."""
    try:
        pairs, lm = _plan_encode(inputs, output, WAV_SUFFIXES, force, model, "speech",
                                 level, "--kbps", kbps)
    except Exception as e:  # noqa: BLE001
        _report(e)

    def work(src: Path, dst: Path) -> None:
        from .speech import compress_speech_file
        res = compress_speech_file(src, lm, level=level, kbps=kbps)
        if res.note:
            typer.echo(f"hvqc: note: {src}: {res.note}", err=True)
        _atomic_write(dst, lambda f: f.write(res.data))

    _run(pairs, work, "encode")


@speech_app.command("decode")
def speech_decode(inputs: List[Path] = typer.Argument(..., help=".hvqc speech files or folders."),
                  output: Optional[str] = typer.Option(None, "-o", "--output",
                                                       help="Output WAV (one input) or folder."),
                  level: Optional[int] = typer.Option(None, "--level", "-l",
                                                      help="Decode a coarser level than the file's "
                                                           "finest."),
                  force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs.")):
    """Decode .hvqc speech files to WAV (mono 16-bit, original rate and length)."""
    try:
        pairs = _plan_decode(inputs, output, level, force, ".wav", WAV_SUFFIXES,
                             "speech decode writes WAV")
    except Exception as e:  # noqa: BLE001
        _report(e)

    def work(src: Path, dst: Path) -> None:
        from .audio import write_wav
        from .speech import decompress_speech
        y, sr = decompress_speech(src.read_bytes(), level=level)
        _atomic_write(dst, lambda f: write_wav(f, y, sr))

    _run(pairs, work, "decode")


def _report(e: Exception) -> None:
    from .errors import user_message
    if isinstance(e, UserError):
        _fail(str(e))
    msg = user_message(e)
    if msg is None:
        if os.environ.get("HVQC_DEBUG"):
            raise e
        msg = f"internal error ({type(e).__name__}: {e}); set HVQC_DEBUG=1 for a traceback"
    _fail(msg)


def main() -> None:
    from .runtime import tune_allocator
    tune_allocator()
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("hvqc: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
