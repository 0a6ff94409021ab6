"""Every command line answers bad input in one line with exit status 2, and never returns wrong data:
each command against each kind of checkpoint it does not take, broken files, and damaged token archives."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from course_lib.paths import CHECKPOINT_DIR
from course_lib.tools import compress as compress_tool
from course_lib.tools import evaluate as evaluate_tool
from course_lib.tools import sample as sample_tool
from course_lib.tools.compress import pack, unpack

KINDS = {  # a shipped checkpoint of each kind
    "tokenizer": "vq-f4-shapes", "continuous tokenizer": "kl-f4-shapes", "vqgan": "vqgan-f4-photos",
    "classifier": "classifier-shapes", "feature-net": "feature-net-photos", "gpt": "gpt-shapes",
    "maskgit": "maskgit-shapes", "flow": "flow-shapes"}


def one_line_error(capsys, code: int, *expected: str) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    err = captured.err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("kind", ["classifier", "feature-net", "gpt", "maskgit", "flow"])
def test_evaluate_refuses_what_is_not_a_tokenizer(kind, capsys):
    code = evaluate_tool.main([KINDS[kind], "--data", "shapes", "--n", "4"])
    one_line_error(capsys, code, "evaluate reads tokenizers", "try: python -m course_lib.")


@pytest.mark.parametrize("kind", ["tokenizer", "continuous tokenizer", "vqgan", "classifier", "feature-net"])
def test_sample_refuses_what_is_not_a_generator(kind, capsys):
    code = sample_tool.main([KINDS[kind], "--n", "2"])
    one_line_error(capsys, code, "sample from a generator checkpoint", "python -m course_lib.sample gpt-shapes")


@pytest.mark.parametrize("option,kind,expected", [
    ("--gpt", "tokenizer", "give an unconditional GPT"), ("--gpt", "maskgit", "give an unconditional GPT"),
    ("--gpt", "flow", "give an unconditional GPT"), ("--gpt", "classifier", "give an unconditional GPT"),
    ("--tokenizer", "gpt", "give a discrete tokenizer"), ("--tokenizer", "classifier", "give a discrete tokenizer"),
    ("--tokenizer", "continuous tokenizer", "cannot entropy-code latents"),
    ("--gpt", "gpt", "models (4, 4) grids of 256 tokens"),  # gpt-shapes does not model vq-f4-photos' grids
])
def test_compress_refuses_the_wrong_kind(option, kind, expected, tmp_path, capsys):
    folder = _photos(tmp_path, 2)
    code = compress_tool.main_compress([str(folder), "--out", str(tmp_path / "a.tok"), option, KINDS[kind]])
    one_line_error(capsys, code, expected)
    assert not (tmp_path / "a.tok").exists()


@pytest.mark.parametrize("content,expected", [
    (b"hello, I am text\n", "not a readable checkpoint"), (bytes(range(256)) * 40, "not a readable checkpoint")])
def test_a_file_that_is_not_a_checkpoint_is_one_clear_line(content, expected, tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    for command in (lambda: sample_tool.main([str(path)]), lambda: evaluate_tool.main([str(path), "--data", "shapes"])):
        err = one_line_error(capsys, command(), expected)
        assert "weights_only" not in err  # torch's advice to unpickle arbitrary code is wrong here


def test_compress_on_an_empty_folder_or_a_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = compress_tool.main_compress([str(tmp_path / "empty"), "--out", str(tmp_path / "a.tok")])
    one_line_error(capsys, code, "has no images: expected files ending in .png")
    (tmp_path / "one.png").write_bytes(b"")
    code = compress_tool.main_compress([str(tmp_path / "one.png"), "--out", str(tmp_path / "a.tok")])
    one_line_error(capsys, code, "is a file; give the folder")


def test_decompress_refuses_what_is_not_an_archive(tmp_path, capsys):
    code = compress_tool.main_decompress([str(CHECKPOINT_DIR / "gpt-photos.pt"), "--out", str(tmp_path / "out")])
    one_line_error(capsys, code, "not a token archive")
    assert not (tmp_path / "out").exists()


def _photos(tmp_path, n: int):
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = (torch.rand(40, 40, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(pixels).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("archive")
    assert compress_tool.main_compress([str(_photos(tmp, 5)), "--out", str(tmp / "a.tok")]) == 0
    return (tmp / "a.tok").read_bytes()


def test_an_archive_cut_at_any_byte_is_refused(archive):
    header, stream = unpack(archive)
    assert len(header["files"]) == 5 and stream
    for cut in range(len(archive)):
        with pytest.raises(ValueError, match="token archive"):
            unpack(archive[:cut])
    with pytest.raises(ValueError, match="token archive"):
        unpack(archive + b"\0")


def test_a_flipped_bit_in_any_section_is_refused(archive):
    header = json.dumps(unpack(archive)[0]).encode()
    sections = {"magic": 1, "format": 5, "header length": 9, "header": 12 + len(header) // 2,
                "stream length": 12 + len(header) + 2, "stream": 12 + len(header) + 8 + 3, "checksum": len(archive) - 2}
    for section, offset in sections.items():
        damaged = bytearray(archive)
        damaged[offset] ^= 0x10
        with pytest.raises(ValueError, match="archive"):
            unpack(bytes(damaged))


def test_a_damaged_archive_writes_no_image(archive, tmp_path, capsys):
    for cut in (len(archive) - 4, len(archive) // 2, 300):
        path = tmp_path / f"cut{cut}.tok"
        path.write_bytes(archive[:cut])
        code = compress_tool.main_decompress([str(path), "--out", str(tmp_path / f"out{cut}")])
        one_line_error(capsys, code, "token archive")
        assert not (tmp_path / f"out{cut}").exists()


def test_pack_and_unpack_round_trip():
    assert unpack(pack({"files": ["a"]}, b"xyz")) == ({"files": ["a"]}, b"xyz")
