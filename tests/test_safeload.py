"""Safe checkpoint loading (``pixgen.safeload``) through each of its callers.

A pickle that would run code is refused with one message, and the code never runs,
whichever door the file comes through: a CLIP checkpoint (loading, ``pixgen classify
--model ARCH:FILE``, ``pixgen models import``), a VQGAN checkpoint, or a run's
``checkpoint.pt``. A file larger than its kind allows is refused before any of it is read.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from clip_fixtures import TINY_ARCH, make_tiny_clip_checkpoint, write_images
from vqgan_fixtures import write_tiny_vqgan

from pixgen import safeload
from pixgen.checkpoint import read_checkpoint as read_resume_checkpoint
from pixgen.cli import main
from pixgen.models.clip import load_clip
from pixgen.models.vqgan import read_checkpoint as read_vqgan_checkpoint
from pixgen.models.weights import catalog, reset_catalog

# Larger than any kind's bound (CLIP's 32 GiB is the largest); a sparse file costs nothing.
HUGE = 64 * safeload.GiB


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def write_code_pickle(path: Path, marker: Path, *, legacy: bool) -> Path:
    """A checkpoint of the caller's usual shape with code hidden in it."""
    payload = {
        "format": "pixgen-checkpoint",  # what resume looks for
        "state_dict": {"w": torch.zeros(1)},
        "payload": RunsCode(marker),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def _clip_file(folder: Path, name: str) -> Path:
    """A path beside a tiny CLIP's ``ARCH.json``, so ``ARCH:path`` names a model."""
    make_tiny_clip_checkpoint(folder)
    return folder / name


def load_as_clip(path: Path) -> None:
    load_clip(f"{TINY_ARCH}:{path}")


def load_as_vqgan(path: Path) -> None:
    read_vqgan_checkpoint(path)


def load_as_resume(path: Path) -> None:
    read_resume_checkpoint(path)


CALLERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "clip": ("model.pt", load_as_clip),
    "vqgan": ("last.ckpt", load_as_vqgan),
    "resume": ("checkpoint.pt", load_as_resume),
}


def _place(caller: str, tmp_path: Path) -> Path:
    name = CALLERS[caller][0]
    return _clip_file(tmp_path / "m", name) if caller == "clip" else tmp_path / "m" / name


def _assert_refused_once(message: str, path: Path) -> None:
    assert f"refused to load {path}" in message
    assert "system" in message  # names the offender (posix.system)
    assert "nothing was executed" in message
    assert "weights_only" not in message  # never torch's advice to load unsafely
    assert message.count("refused to load") == 1  # one message, not one per layer


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_pickle_carrying_code_is_refused_by_every_caller(
    tmp_path: Path, caller: str, legacy: bool
) -> None:
    marker = tmp_path / "ran-code"
    path = write_code_pickle(_place(caller, tmp_path), marker, legacy=legacy)
    with pytest.raises(safeload.UnsafeCheckpoint) as err:
        CALLERS[caller][1](path)
    _assert_refused_once(str(err.value), path)
    assert err.value.exit_code == 2
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_classify_and_import_refuse_a_clip_file_carrying_code(
    tmp_path: Path, legacy: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran-code"
    path = write_code_pickle(_clip_file(tmp_path / "m", "model.pt"), marker, legacy=legacy)
    image = write_images(tmp_path / "imgs", 1)[0]
    argv = ["classify", str(image), "--labels", "a,b", "--model", f"{TINY_ARCH}:{path}"]
    assert main(argv) == 2
    _assert_refused_once(capsys.readouterr().err.removeprefix("error: "), path)
    reset_catalog()
    assert main(["models", "import", "ViT-B-32/evil", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "nothing was executed" in err
    assert not catalog().provider("clip").owns("ViT-B-32/evil")  # nothing half-imported
    assert not marker.exists()


def _forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way safeload reads a file's bytes fails the test."""
    import safetensors
    import safetensors.torch

    def read(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the file was read")

    monkeypatch.setattr(torch, "load", read)
    monkeypatch.setattr(zipfile, "is_zipfile", read)
    monkeypatch.setattr(safetensors, "safe_open", read)
    monkeypatch.setattr(safetensors.torch, "load_file", read)


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.truncate(path, size)  # no data blocks: the size is all there is
    return path


@pytest.mark.parametrize("caller", list(CALLERS))
def test_an_oversize_file_is_refused_before_reading(
    tmp_path: Path, caller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _sparse(_place(caller, tmp_path), HUGE)
    _forbid_reading(monkeypatch)
    with pytest.raises(safeload.OversizeCheckpoint) as err:
        CALLERS[caller][1](path)
    message = str(err.value)
    assert f"refused to read {path}" in message
    assert f"{HUGE:,} bytes" in message and "none of it was read" in message


@pytest.mark.parametrize("kind", ["clip", "vqgan"])
def test_import_refuses_an_oversize_file_before_copying_it(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = write_tiny_vqgan(tmp_path / "src")
    big = _sparse(tmp_path / "src" / ("big.safetensors" if kind == "clip" else "big.ckpt"), HUGE)
    files = [big] if kind == "clip" else [config, big]
    _forbid_reading(monkeypatch)
    reset_catalog()
    with pytest.raises(safeload.OversizeCheckpoint):
        catalog().import_files("ViT-B-32/big" if kind == "clip" else "big", files, kind=kind)
    assert not any((Path(os.environ["PIXGEN_HOME"])).rglob("big*"))


# -- safeload itself ----------------------------------------------------------------------

SMALL = safeload.FileKind(what="test checkpoint", max_bytes=1 << 20)


def test_the_allow_list_is_the_kinds_and_only_while_loading(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"t": torch.ones(2), "n": 3, "s": "x"}, path)
    assert safeload.load(path, SMALL)["n"] == 3
    assert [g for g in torch.serialization.get_safe_globals() if isinstance(g, tuple)] == []


def test_damaged_files_are_one_clear_error(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"t": torch.ones(4)}, good)
    for name, data in (
        ("cut.pt", good.read_bytes()[:200]),
        ("html.pt", b"<html>not found</html>"),
        ("cut.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"),
    ):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(safeload.DamagedCheckpoint, match="damaged or not a test checkpoint"):
            safeload.load(tmp_path / name, SMALL)
    with pytest.raises(safeload.CheckpointError, match="test checkpoint not found"):
        safeload.load(tmp_path / "absent.pt", SMALL)


def test_a_file_holding_no_tensors_has_no_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {"w": "not a tensor"}}, path)
    with pytest.raises(safeload.CheckpointError, match="holds no model state_dict"):
        safeload.read_state_dict(path, SMALL)
    torch.save({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, path)
    assert list(safeload.read_state_dict(path, SMALL)) == ["w"]
