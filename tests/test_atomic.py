"""converters/atomic.py: outputs appear whole or not at all, with the modes the umask gives any new file
(``tempfile.mkstemp``/``mkdtemp`` alone would leave them 0600 / 0700)."""
import os
import stat

import pytest
import torch

import converters as C
from converters import atomic
from opensora_dual import registry

PRESET = "STDiT3-S/2"


@pytest.fixture(autouse=True)
def _spec_cache(tmp_path_factory, monkeypatch):
    """Tests use their own oracle cache (shared across the session, never the user's)."""
    monkeypatch.setenv("OPENSORA_DUAL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for the test; the old one is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(value):
        os.umask(value)

    yield set_umask
    os.umask(old)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return registry.build(PRESET, "pt")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def tree_modes(folder):
    return {name: mode(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_current_umask_reads_without_changing_it(umask, monkeypatch, mask):
    umask(mask)
    assert atomic.current_umask() == mask
    assert os.umask(mask) == mask   # unchanged
    # without /proc (other systems): set-and-restore gives the same answer and leaves the umask as it was

    def no_proc(*a, **k):
        raise OSError("no /proc here")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)
    assert atomic.current_umask() == mask and os.umask(mask) == mask


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_file_and_dir_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    with atomic.atomic_file(tmp_path / "a.bin") as tmp:
        assert mode(tmp) == 0o600   # mkstemp's; fixed before the rename
        with open(tmp, "wb") as f:
            f.write(b"x")
    assert mode(tmp_path / "a.bin") == file_mode
    with atomic.atomic_dir(str(tmp_path / "rel")) as tmp:
        with open(os.path.join(tmp, "f.json"), "w") as f:
            f.write("{}")
        with atomic.atomic_file(os.path.join(tmp, "g.bin")) as t2:   # nested: still the umask's mode
            open(t2, "wb").close()
    assert mode(tmp_path / "rel") == dir_mode
    assert tree_modes(tmp_path / "rel") == {"f.json": file_mode, "g.bin": file_mode}
    # a rewrite of an existing folder gets the same modes
    with atomic.atomic_dir(str(tmp_path / "rel")) as tmp:
        open(os.path.join(tmp, "h.bin"), "wb").close()
    assert mode(tmp_path / "rel") == dir_mode and tree_modes(tmp_path / "rel") == {"h.bin": file_mode}


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_converted_files_and_release_folders_follow_the_umask(tmp_path, umask, model, mask, file_mode, dir_mode):
    umask(mask)
    _, kw = registry.resolve(PRESET)
    rel = C.save_release_folder(model, "pt", str(tmp_path / "OpenSora-STDiT-v3"), kw, preset=PRESET)
    assert mode(rel) == dir_mode
    assert tree_modes(rel) == {"config.json": file_mode, "model.safetensors": file_mode}
    for name, to in (("m.ckpt", "ms"), ("m.safetensors", "pt"), ("mo.ckpt", "mindone")):
        C.convert(rel, str(tmp_path / name), to=to, progress=False)
        assert mode(tmp_path / name) == file_mode, name
    C.convert(str(tmp_path / "m.safetensors"), str(tmp_path / "rel2"), progress=False)
    assert mode(tmp_path / "rel2") == dir_mode
    assert set(tree_modes(tmp_path / "rel2").values()) == {file_mode}


def test_interrupted_atomic_writes_leave_nothing(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(out / "a.bin") as tmp:
            open(tmp, "wb").write(b"half")
            raise KeyboardInterrupt
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(str(out / "rel")) as tmp:
            open(os.path.join(tmp, "x"), "wb").write(b"half")
            raise RuntimeError("boom")
    assert os.listdir(out) == []
    # existing outputs survive a failed rewrite, contents and modes unchanged
    (out / "a.bin").write_bytes(b"old")
    os.chmod(out / "a.bin", 0o640)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_file(out / "a.bin") as tmp:
            open(tmp, "wb").write(b"new")
            raise KeyboardInterrupt
    assert (out / "a.bin").read_bytes() == b"old" and mode(out / "a.bin") == 0o640
    assert sorted(os.listdir(out)) == ["a.bin"]
