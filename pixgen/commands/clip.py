"""``pixgen classify`` and ``pixgen search``: CLIP's zero-shot classification and text search.

``search`` keeps the image embeddings of a folder in one index file inside it,
``.pixgen-index-<model-slug>.safetensors``: the embeddings as a tensor, and in the file's
metadata the model, the content hash (sha256) of each row and a ``name -> (size, mtime,
sha256)`` table so unchanged files are not even re-hashed. The index is rewritten
atomically, only when something changed; rows are keyed by content, so renamed or copied
files are not embedded again.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixgen.commands import OfflineOption
from pixgen.errors import PixgenError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from pixgen.models.clip import ClipModel

INDEX_VERSION = "1"
BATCH = 32


def _device(name: str) -> Any:
    from pixgen.engine import resolve_device

    return resolve_device(name)


def _load_model(name: str, device: str, offline: bool) -> ClipModel:
    from pixgen.models.clip import load_clip
    from pixgen.models.weights import offline_mode

    return load_clip(name, _device(device), offline=offline_mode(offline))


def _warn(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")


def _open_image(path: Path) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError as exc:
        raise PixgenError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise PixgenError(f"{path}: is a folder, not an image") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        detail = (
            "not an image pixgen can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        )
        raise PixgenError(f"{path}: {detail}") from exc


def _embed(
    model: ClipModel, paths: Sequence[Path], failed: list[str]
) -> tuple[list[Path], torch.Tensor | None]:
    """Embed readable images in batches; unreadable ones are reported and skipped."""
    import torch

    done: list[Path] = []
    chunks: list[torch.Tensor] = []
    batch: list[tuple[Path, Image.Image]] = []

    def flush() -> None:
        if batch:
            chunks.append(model.encode_pil([im for _, im in batch]).cpu())
            done.extend(p for p, _ in batch)
            batch.clear()

    for path in paths:
        try:
            batch.append((path, _open_image(path)))
        except PixgenError as exc:
            _warn(exc.message)
            failed.append(str(path))
            continue
        if len(batch) >= BATCH:
            flush()
    flush()
    return done, (torch.cat(chunks) if chunks else None)


def _fail_if_any(failed: list[str], total: int) -> None:
    if failed:
        raise PixgenError(
            f"{len(failed)} of {total} files could not be read: {', '.join(failed)}", exit_code=1
        )


# -- classify --------------------------------------------------------------------------------


def read_labels(labels: str | None, labels_file: Path | None) -> list[str]:
    """Labels from ``--labels "a,b"`` and/or a file (one per line, ``#`` comments)."""
    out = [s.strip() for s in (labels or "").split(",")]
    if labels_file is not None:
        try:
            text = labels_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PixgenError(
                f"cannot read --labels-file {labels_file}: {exc.strerror or exc}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise PixgenError(
                f"--labels-file {labels_file} is not UTF-8 text (one label per line)"
            ) from exc
        out += [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    out = list(dict.fromkeys(s for s in out if s))
    if not out:
        raise PixgenError('no labels: give --labels "a cat,a dog" or --labels-file FILE')
    return out


ModelOption = Annotated[str, typer.Option("--model", "-m", help="CLIP model, e.g. ViT-B-32/openai")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")]


def classify_command(
    images: Annotated[list[Path], typer.Argument(help="image files to classify")],
    labels: Annotated[
        str | None,
        typer.Option("--labels", "-l", help='comma-separated labels, e.g. "a cat,a dog"'),
    ] = None,
    labels_file: Annotated[
        Path | None, typer.Option("--labels-file", help="labels, one per line")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="prompt around each label, {} = the label "
            "[default: the model's own, 'a photo of {}' for most]",
        ),
    ] = None,
    model: ModelOption = "ViT-B-32/openai",
    device: DeviceOption = "auto",
    offline: OfflineOption = False,
    top: Annotated[
        int | None, typer.Option("--top", min=1, help="show only the K likeliest labels")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Zero-shot classification: the probability of each label for each image."""
    import torch

    names = read_labels(labels, labels_file)
    if template is not None and "{}" not in template:
        raise PixgenError(f"--template {template!r} must contain {{}} where the label goes")
    clip = _load_model(model, device, offline)
    template = template or clip.prompt_template
    text = clip.encode_text([template.replace("{}", label) for label in names])
    failed: list[str] = []
    done, features = _embed(clip, images, failed)
    results = []
    if features is not None:
        with torch.no_grad():
            probs = clip.logits(features.to(clip.device), text).softmax(dim=-1).cpu()
        for path, row in zip(done, probs.tolist(), strict=True):
            ranked = sorted(zip(names, row, strict=True), key=lambda lp: -lp[1])[:top]
            results.append(
                {
                    "image": str(path),
                    "labels": [{"label": lab, "probability": p} for lab, p in ranked],
                }
            )
    if as_json:
        sys.stdout.write(
            json.dumps({"model": clip.name, "results": results, "failed": failed}, indent=2) + "\n"
        )
    else:
        lines = []
        for item in results:
            lines.append(item["image"])
            lines += [f"  {e['probability']:6.1%}  {e['label']}" for e in item["labels"]]
        sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    _fail_if_any(failed, len(images))


# -- search ----------------------------------------------------------------------------------


def index_path(folder: Path, model_name: str) -> Path:
    """The index file of ``folder`` for ``model_name``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.")
    if len(slug) > 60:  # local file names are long paths: keep them unique but short
        slug = f"{slug[:40]}-{hashlib.sha256(model_name.encode()).hexdigest()[:12]}"
    return folder / f".pixgen-index-{slug}.safetensors"


def _model_identity(clip: ClipModel) -> str:
    """The model's name plus, for files, what makes its weights distinct."""
    name = clip.name
    if ":" in name:
        path = Path(name.partition(":")[2])
        if path.is_file():
            stat = path.stat()
            name += f"|{stat.st_size}|{stat.st_mtime_ns}"
    return name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ImageIndex:
    """Embeddings of image contents (sha256 -> row) for one model."""

    model: str
    hashes: list[str]
    embeddings: torch.Tensor | None  # [rows, D] float32 on the CPU
    files: dict[str, list[Any]]  # name -> [size, mtime_ns, sha256]

    @classmethod
    def load(cls, path: Path, model: str) -> ImageIndex:
        """The index at ``path``, or an empty one if absent, unreadable or for another model."""
        empty = cls(model, [], None, {})
        if not path.is_file():
            return empty
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("version") != INDEX_VERSION or meta.get("model") != model:
                    return empty
                embeddings = handle.get_tensor("embeddings")
            hashes = json.loads(meta["hashes"])
            files = json.loads(meta["files"])
            if len(hashes) != embeddings.shape[0]:
                return empty
        except Exception:  # a damaged index is rebuilt, never trusted
            return empty
        return cls(model, hashes, embeddings, files)

    def save(self, path: Path) -> None:
        from safetensors.torch import save

        from pixgen.fileio import atomic_write_bytes

        assert self.embeddings is not None
        meta = {
            "version": INDEX_VERSION,
            "model": self.model,
            "hashes": json.dumps(self.hashes),
            "files": json.dumps(self.files),
        }
        atomic_write_bytes(path, save({"embeddings": self.embeddings.contiguous()}, metadata=meta))


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    """Image files (by extension) in ``folder``, or in its whole tree; hidden files and
    folders (the index) and other files (notes, captions, sidecars) are left alone."""
    from PIL import Image as PILImage

    image_suffixes = {ext.lower() for ext in PILImage.registered_extensions()}
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in candidates
        if p.suffix.lower() in image_suffixes
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


def _folder_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The images a search of ``folder`` covers; a folder with none is an error."""
    if not folder.is_dir():
        raise PixgenError(f"--images {folder}: no such folder")
    files = _image_files(folder, recursive)
    if not files:
        below = "" if recursive else _subfolder_hint(folder)
        raise PixgenError(f"--images {folder}: the folder has no image files to search{below}")
    return files


def _subfolder_hint(folder: Path) -> str:
    nested = len(_image_files(folder, recursive=True))
    return f" (its subfolders have {nested}: add --recursive)" if nested else ""


def update_index(
    clip: ClipModel, folder: Path, recursive: bool = False
) -> tuple[list[tuple[Path, int]], ImageIndex, list[str]]:
    """Bring the folder's index up to date; returns (file, row) pairs, the index, failures.

    One index per searched folder: files in subfolders are keyed by their path relative
    to it (a top-level file's key is its name, as before subfolders were searched)."""
    import torch

    files = _folder_files(folder, recursive)
    path = index_path(folder, clip.name)
    old = ImageIndex.load(path, _model_identity(clip))
    failed: list[str] = []
    hashes: dict[Path, str] = {}
    for file in files:
        try:
            stat = file.stat()
            known = old.files.get(_key(folder, file))
            if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
                hashes[file] = known[2]  # unchanged since it was hashed: trust the table
            else:
                hashes[file] = sha256_of(file)
        except OSError as exc:
            _warn(f"{file}: {exc.strerror or exc}")
            failed.append(str(file))
    old_rows = {h: i for i, h in enumerate(old.hashes)}
    first_file: dict[str, Path] = {}
    for file, digest in hashes.items():
        if digest not in old_rows:
            first_file.setdefault(digest, file)
    done, new = _embed(clip, list(first_file.values()), failed)
    present = set(hashes.values())
    keep = [h for h in old.hashes if h in present]  # rows of deleted files are dropped
    parts = []
    if keep and old.embeddings is not None:
        parts.append(old.embeddings[[old_rows[h] for h in keep]])
    if new is not None:
        parts.append(new.float())
    all_hashes = keep + [hashes[f] for f in done]
    row_of = {h: i for i, h in enumerate(all_hashes)}
    table = {
        _key(folder, f): [f.stat().st_size, f.stat().st_mtime_ns, h]
        for f, h in hashes.items()
        if h in row_of
    }
    index = ImageIndex(old.model, all_hashes, torch.cat(parts) if parts else None, table)
    if index.embeddings is not None and (all_hashes != old.hashes or table != old.files):
        try:
            index.save(path)
        except (OSError, PixgenError) as exc:  # a read-only folder still gets its search
            _warn(f"cannot write the search index {path}: {exc}")
    pairs = [(f, row_of[h]) for f, h in hashes.items() if h in row_of]
    return pairs, index, failed


def _key(folder: Path, file: Path) -> str:
    return file.relative_to(folder).as_posix()


def search_command(
    query: Annotated[str, typer.Argument(help="what to look for, e.g. 'a dog on a beach'")],
    images: Annotated[Path, typer.Option("--images", "-i", help="folder of images to search")],
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="how many results")] = 10,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="also search the folder's subfolders")
    ] = False,
    model: ModelOption = "ViT-B-32/openai",
    device: DeviceOption = "auto",
    offline: OfflineOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Rank the images of a folder by similarity to a text (embeddings cached in the folder)."""
    if not query.strip():
        raise PixgenError("the search text is empty")
    files = _folder_files(images, recursive)  # bad folders fail before the model loads
    clip = _load_model(model, device, offline)
    pairs, index, failed = update_index(clip, images, recursive)
    results: list[dict[str, Any]] = []
    if pairs and index.embeddings is not None:
        text = clip.encode_text([query]).cpu()
        scores = (index.embeddings[[row for _, row in pairs]] @ text[0]).tolist()
        ranked = sorted(
            zip((str(f) for f, _ in pairs), scores, strict=True), key=lambda fs: (-fs[1], fs[0])
        )
        results = [{"path": f, "score": s} for f, s in ranked[:top]]
    if as_json:
        sys.stdout.write(
            json.dumps(
                {"query": query, "model": clip.name, "results": results, "failed": failed}, indent=2
            )
            + "\n"
        )
    else:
        lines = [f"{r['score']:7.4f}  {r['path']}" for r in results]
        sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    _fail_if_any(failed, len(files))


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_command)
    app.command("search")(search_command)
