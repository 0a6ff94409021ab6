"""One class-conditioning piece for every generator, in the index layout the shipped checkpoints use."""
import pytest
import torch

from course_lib.generators.conditioning import NO_CLASS, ClassRows, drop_classes
from course_lib.generators.dit import build_dit
from course_lib.generators.gpt import build_gpt
from course_lib.generators.maskgit import build_maskgit


def test_each_model_keeps_its_rows():
    k, c = 16, 3
    gpt = build_gpt("gpt-tiny", codebook_size=k, grid=(2, 2), num_classes=c)
    maskgit = build_maskgit("maskgit-tiny", codebook_size=k, grid=(2, 2), num_classes=c)
    dit = build_dit("dit-tiny", grid=(4, 4), num_classes=c)
    classes = torch.tensor([0, 2, NO_CLASS])
    assert gpt.class_tokens(classes, 3).tolist() == [k, k + 2, k + c]  # after the K tokens; no class last
    assert gpt.class_tokens(None, 2).tolist() == [k + c] * 2
    assert maskgit.class_tokens(classes, 3).tolist() == [k + 1, k + 3, k + 1 + c]  # after the tokens and [MASK]
    assert dit.class_rows(classes, 3).tolist() == [0, 2, c]  # from row 0
    assert gpt.embedding.num_embeddings == k + c + 1 and maskgit.embedding.num_embeddings == k + c + 2
    assert dit.class_embed.num_embeddings == c + 1


def test_bad_classes_are_refused_with_the_range():
    rows = ClassRows(3, offset=10, family="GPT")
    with pytest.raises(ValueError, match=r"classes must lie in \[0, 3\)"):
        rows(torch.tensor([3]), 1)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        rows(torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match="this GPT is unconditional"):
        ClassRows(0, family="GPT")(torch.tensor([0]), 1)
    assert rows(1, 3).tolist() == [11, 11, 11]


def test_class_dropout_draws_once_per_row_from_the_generator():
    classes = torch.arange(4000) % 5
    dropped = drop_classes(classes, 0.2, torch.Generator().manual_seed(0))
    assert abs((dropped == NO_CLASS).float().mean() - 0.2) < 0.02
    assert torch.equal(dropped[dropped != NO_CLASS], classes[dropped != NO_CLASS])
    again = drop_classes(classes, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)
