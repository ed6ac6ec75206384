"""The weights manager: resumable downloads, the catalogue and ``pixgen models``."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from vqgan_fixtures import serve, write_registry, write_tiny_vqgan

from pixgen.cli import main
from pixgen.errors import WeightsError
from pixgen.models import weights
from pixgen.models.download import DownloadInterrupted, download, part_path
from pixgen.models.weights import Catalog, WeightsInfo, catalog


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PIXGEN_HOME", str(home))
    monkeypatch.delenv("PIXGEN_OFFLINE", raising=False)
    monkeypatch.delenv("PIXGEN_VQGAN_REGISTRY", raising=False)
    weights.reset_catalog()
    yield home
    weights.reset_catalog()


@pytest.fixture
def blob(tmp_path: Path) -> tuple[Path, bytes]:
    root = tmp_path / "www"
    root.mkdir()
    data = bytes(range(256)) * 4096  # 1 MiB: more than one read chunk
    (root / "blob.bin").write_bytes(data)
    return root, data


@pytest.fixture
def tiny_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A loopback server with a tiny VQGAN, named ``tiny_vqgan`` by an extra registry."""
    root = tmp_path / "www"
    config, ckpt = write_tiny_vqgan(root / "tiny")
    with serve(root) as server:
        registry = write_registry(tmp_path / "registry.yaml", server)
        monkeypatch.setenv("PIXGEN_VQGAN_REGISTRY", str(registry))
        yield server, config, ckpt


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- download -------------------------------------------------------------------------


def test_download_verifies_and_moves_into_place(blob, tmp_path: Path) -> None:
    root, data = blob
    dest = tmp_path / "cache" / "blob.bin"
    with serve(root) as server:
        result = download(server.url("blob.bin"), dest, sha256=_sha(data), progress=True)
    assert dest.read_bytes() == data
    assert result.sha256 == _sha(data) and result.size == len(data)
    assert not part_path(dest).exists()


def test_concurrent_downloads_of_one_file_fetch_it_once(blob, tmp_path: Path) -> None:
    """Two fetches of the same weights at once (two runs starting together): the second
    waits for the first instead of appending to the same .part file."""
    import threading

    root, data = blob
    dest = tmp_path / "cache" / "blob.bin"
    results: list[object] = []
    with serve(root) as server:

        def fetch() -> None:
            results.append(
                download(server.url("blob.bin"), dest, sha256=_sha(data), progress=False)
            )

        threads = [threading.Thread(target=fetch) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        served = [r for r, _ in server.requests if r == "blob.bin"]
    assert dest.read_bytes() == data and len(results) == 2
    assert len(served) == 1


def test_download_resumes_after_dropped_connection(blob, tmp_path: Path) -> None:
    root, data = blob
    dest = tmp_path / "cache" / "blob.bin"
    with serve(root) as server:
        server.drop_once.add("blob.bin")
        with pytest.raises(DownloadInterrupted, match="run the same command again to resume"):
            download(server.url("blob.bin"), dest, sha256=_sha(data), progress=False)
        assert not dest.exists()
        assert part_path(dest).stat().st_size == len(data) // 2
        result = download(server.url("blob.bin"), dest, sha256=_sha(data), progress=False)
        assert server.requests[-1] == ("blob.bin", f"bytes={len(data) // 2}-")
    assert dest.read_bytes() == data
    assert result.resumed_from == len(data) // 2
    assert not part_path(dest).exists()


def test_download_restarts_when_server_ignores_range(blob, tmp_path: Path) -> None:
    root, data = blob
    dest = tmp_path / "blob.bin"
    part_path(dest).write_bytes(b"junk from another file")
    with serve(root) as server:
        server.ignore_range = True
        download(server.url("blob.bin"), dest, sha256=_sha(data), progress=False)
    assert dest.read_bytes() == data


def test_download_finishes_a_complete_part_file(blob, tmp_path: Path) -> None:
    root, data = blob
    dest = tmp_path / "blob.bin"
    part_path(dest).write_bytes(data)  # complete, but the rename never happened
    with serve(root) as server:
        download(server.url("blob.bin"), dest, sha256=_sha(data), progress=False)
        assert server.requests[-1][1] == f"bytes={len(data)}-"  # answered 416
    assert dest.read_bytes() == data and not part_path(dest).exists()


@pytest.mark.parametrize("status", [404, 500])
def test_download_http_error_is_clear(blob, tmp_path: Path, status: int) -> None:
    root, _ = blob
    dest = tmp_path / "blob.bin"
    with serve(root) as server:
        server.fail["blob.bin"] = status
        with pytest.raises(WeightsError, match=f"HTTP {status}") as err:
            download(server.url("blob.bin"), dest, progress=False)
    assert "pixgen models import" in str(err.value)
    assert not dest.exists() and not part_path(dest).exists()


def test_download_checksum_mismatch_deletes_and_restarts(blob, tmp_path: Path) -> None:
    root, data = blob
    dest = tmp_path / "blob.bin"
    with serve(root) as server:
        with pytest.raises(WeightsError, match="checksum mismatch") as err:
            download(server.url("blob.bin"), dest, sha256="0" * 64, progress=False)
        assert _sha(data) in str(err.value)
        assert not dest.exists() and not part_path(dest).exists()
        download(server.url("blob.bin"), dest, sha256=_sha(data), progress=False)
        assert server.requests[-1][1] is None  # restarted from the beginning
    assert dest.read_bytes() == data


def test_download_unreachable_host(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WeightsError, match="cannot download"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", progress=False, timeout=5)
    assert not (tmp_path / "x").exists()


# -- the catalogue --------------------------------------------------------------------


class FakeProvider:
    kind = "fake"

    def owns(self, name: str) -> bool:
        return name == "fake-model"

    def entries(self) -> list[WeightsInfo]:
        return [self.info("fake-model")]

    def info(self, name: str) -> WeightsInfo:
        return WeightsInfo(name=name, kind=self.kind, present=False, path=Path("/nowhere"))

    def fetch(self, name: str, *, progress: bool = True) -> Path:
        return Path("/fetched")

    def import_files(self, name: str, files: list[Path]) -> Path:
        return Path("/imported")

    def remove(self, name: str) -> None:
        pass


def test_catalog_skips_absent_provider_modules() -> None:
    cat = Catalog(
        ("pixgen.models.no_such_module:weights_provider", "pixgen.models.vqgan:weights_provider")
    )
    assert [p.kind for p in cat.providers()] == ["vqgan"]
    assert "vqgan_imagenet_f16_16384" in cat.names()


def test_catalog_lists_every_provider(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeProvider()
    catalog().add_provider(fake)
    assert main(["models", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["fake-model"]["kind"] == "fake"
    for name in (
        "vqgan_imagenet_f16_16384",
        "vqgan_imagenet_f16_1024",
        "wikiart_16384",
        "vqgan_gumbel_openimages_f8_8192",
    ):
        assert listed[name]["kind"] == "vqgan" and listed[name]["present"] is False
    assert isinstance(fake, weights.WeightsProvider)


def test_unknown_model_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "path", "vqgan_imagenet_f16_1638"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'vqgan_imagenet_f16_1638'" in err
    assert "vqgan_imagenet_f16_16384" in err and "Traceback" not in err


def test_path_of_absent_model_says_how_to_get_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "path", "wikiart_16384"]) == 2
    err = capsys.readouterr().err
    assert "pixgen models fetch wikiart_16384" in err
    assert "pixgen models import wikiart_16384 model.yaml last.ckpt" in err


def test_offline_ensure_names_the_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIXGEN_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline") as err:
        catalog().ensure("vqgan_imagenet_f16_16384")
    assert err.value.exit_code == 2
    assert "`pixgen models fetch vqgan_imagenet_f16_16384`" in str(err.value)
    assert "`pixgen models import vqgan_imagenet_f16_16384 model.yaml last.ckpt`" in str(err.value)


# -- pixgen models, end to end over the loopback server -------------------------------


def test_fetch_list_path_remove(tiny_site, _home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server, _, ckpt = tiny_site
    server.drop_once.add("tiny/last.ckpt")
    assert main(["models", "fetch", "tiny_vqgan"]) == 2
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err
    folder = _home / "vqgan" / "tiny_vqgan"
    assert not (folder / "last.ckpt").exists() and part_path(folder / "last.ckpt").exists()

    assert main(["models", "fetch", "tiny_vqgan"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(folder)
    assert f"sha256 {_sha(ckpt.read_bytes())}" in err  # no checksum in the registry: printed
    assert (folder / "last.ckpt").read_bytes() == ckpt.read_bytes()
    assert any(r == "tiny/last.ckpt" and h and h.startswith("bytes=") for r, h in server.requests)

    assert main(["models", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["tiny_vqgan"]["present"] is True
    assert listed["tiny_vqgan"]["sha256"] == _sha(ckpt.read_bytes())
    assert main(["models", "list"]) == 0
    assert "tiny_vqgan" in capsys.readouterr().out

    assert main(["models", "path", "tiny_vqgan"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
    assert main(["models", "remove", "tiny_vqgan"]) == 0
    assert not folder.exists()
    assert main(["models", "remove", "tiny_vqgan"]) == 2


def test_fetch_tries_mirrors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _home: Path) -> None:
    root = tmp_path / "www"
    write_tiny_vqgan(root / "tiny")
    with serve(root) as server:
        registry = write_registry(tmp_path / "r.yaml", server, mirror_first="gone/last.ckpt")
        monkeypatch.setenv("PIXGEN_VQGAN_REGISTRY", str(registry))
        catalog().fetch("tiny_vqgan", progress=False)
        assert ("gone/last.ckpt", None) in server.requests
    assert (_home / "vqgan" / "tiny_vqgan" / "last.ckpt").is_file()


def test_fetch_all_sources_failing(tiny_site, _home: Path) -> None:
    server, _, _ = tiny_site
    server.fail["tiny/last.ckpt"] = 500
    with pytest.raises(WeightsError, match=r"could not fetch tiny_vqgan/last\.ckpt") as err:
        catalog().fetch("tiny_vqgan", progress=False)
    assert "HTTP 500" in str(err.value) and "pixgen models import" in str(err.value)
    folder = _home / "vqgan" / "tiny_vqgan"
    assert not (folder / "last.ckpt").exists() and not part_path(folder / "last.ckpt").exists()


def test_fetch_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _home: Path) -> None:
    root = tmp_path / "www"
    write_tiny_vqgan(root / "tiny")
    with serve(root) as server:
        registry = write_registry(tmp_path / "r.yaml", server, sha256="ab" * 32)
        monkeypatch.setenv("PIXGEN_VQGAN_REGISTRY", str(registry))
        with pytest.raises(WeightsError, match="checksum mismatch"):
            catalog().fetch("tiny_vqgan", progress=False)
    assert catalog().info("tiny_vqgan").present is False
    assert list((_home / "vqgan" / "tiny_vqgan").glob("*.ckpt*")) == []


def test_html_page_served_as_config_is_refused(tiny_site, _home: Path) -> None:
    _, config, _ = tiny_site
    config.write_text("<html>Moved</html>\n")
    with pytest.raises(WeightsError, match="config of 'tiny_vqgan' is unusable"):
        catalog().fetch("tiny_vqgan", progress=False)
    assert not (_home / "vqgan" / "tiny_vqgan" / "model.yaml").exists()


def test_import_named_and_new_models(
    tmp_path: Path, _home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ckpt = write_tiny_vqgan(tmp_path / "src")
    # A registered name checks the architecture: the tiny model is not ImageNet 16384.
    assert main(["models", "import", "vqgan_imagenet_f16_16384", str(config), str(ckpt)]) == 2
    assert "is not vqgan_imagenet_f16_16384" in capsys.readouterr().err
    # A new name: the file types say it is a VQGAN.
    assert main(["models", "import", "my_vqgan", str(config), str(ckpt)]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == _home / "vqgan" / "my_vqgan"
    assert (folder / "last.ckpt").read_bytes() == ckpt.read_bytes()
    assert catalog().info("my_vqgan").present
    assert main(["models", "list", "--json"]) == 0
    assert "my_vqgan" in {e["name"] for e in json.loads(capsys.readouterr().out)}
    # Wrong file sets are refused with the usage.
    assert main(["models", "import", "other", str(config)]) == 2
    assert "--kind" in capsys.readouterr().err
    assert main(["models", "import", "other", "--kind", "vqgan", str(config)]) == 2
    assert "takes two files" in capsys.readouterr().err
    assert main(["models", "import", "other", str(tmp_path / "nope.ckpt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_import_refuses_unsafe_checkpoint(
    tmp_path: Path, _home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vqgan_fixtures import write_malicious_checkpoint

    config, _ = write_tiny_vqgan(tmp_path / "src")
    evil = write_malicious_checkpoint(tmp_path / "evil.ckpt", tmp_path / "pwned")
    assert main(["models", "import", "bad", "--kind", "vqgan", str(config), str(evil)]) == 2
    assert "refused to load" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()
    assert not (_home / "vqgan" / "bad" / "last.ckpt").exists()


def test_unwritable_cache_is_a_clear_error(blob, tmp_path: Path) -> None:
    root, _ = blob
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with serve(root) as server:
        with pytest.raises(WeightsError, match="cannot write to the weights cache"):
            download(server.url("blob.bin"), blocker / "blob.bin", progress=False)
        assert server.requests == []


def test_truncated_checkpoint_upstream_is_not_kept(tiny_site, _home: Path) -> None:
    _, _, ckpt = tiny_site
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # the server itself has a broken file
    with pytest.raises(WeightsError, match="unusable and was deleted"):
        catalog().fetch("tiny_vqgan", progress=False)
    folder = _home / "vqgan" / "tiny_vqgan"
    assert not (folder / "last.ckpt").exists() and not part_path(folder / "last.ckpt").exists()
    ckpt.write_bytes(data)  # fixed upstream: fetching again works
    catalog().fetch("tiny_vqgan", progress=False)
    assert (folder / "last.ckpt").read_bytes() == data


def test_recipe_fetches_a_named_model_on_first_use_and_runs(
    tiny_site, _home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole path a user takes: a recipe names a model that is not cached; the run
    downloads it from the (loopback) server, resuming after a dropped connection on the
    second try, loads the Lightning-style checkpoint safely and paints with it."""
    import pixgen

    server, _, ckpt = tiny_site
    server.drop_once.add("tiny/last.ckpt")
    recipe = (
        "name: fetched\nseed: 1\nsize: [32, 24]\nsteps: 4\ndevice: cpu\n"
        "generator: {use: vqgan, model: tiny_vqgan}\n"
        "losses: [{use: smoothness}]\n"
    )
    path = tmp_path / "r.yaml"
    path.write_text(recipe)
    assert main(["run", str(path), "-q", "-o", str(tmp_path / "first")]) == 2
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "first").exists()  # no half-written run folder
    result = pixgen.run(path, output=tmp_path / "second")
    assert result.status == "completed" and result.steps_done == 4
    cached = _home / "vqgan" / "tiny_vqgan" / "last.ckpt"
    assert cached.read_bytes() == ckpt.read_bytes()
    assert any(r == "tiny/last.ckpt" and h and h.startswith("bytes=") for r, h in server.requests)
