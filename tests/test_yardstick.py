"""The yardstick: the Frechet distance's algebra, and the shipped classifiers tested both ways."""
import pytest
import torch

from course_lib.engine.checkpoints import load_model, read_metadata
from course_lib.evaluation.classifier import build_classifier, predict
from course_lib.evaluation.yardstick import Yardstick, frechet_distance
from course_lib.paths import CHECKPOINT_DIR
from course_lib.datasets.labelled import images_in_turn, labelled_images
from course_lib.tools.recipes import RECIPES

# (classifier, tokenizer, data, label) of each shipped yardstick
SHIPPED = [("classifier-shapes", "vq-f8-shapes", "shapes", ("shape", "colour")),
           ("classifier-digits", "vq-f8-glyphs", "digits", "char")]


def test_frechet_distance_of_gaussians_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)
    # covariances S and 4S: Tr(S + 4S - 2 (4 S^2)^(1/2)) = Tr(S), about 3 for N(0, I) in 3-d
    expected = torch.cov(a.T).trace() + a.mean(0).square().sum()  # (+ |mu - 2 mu|^2, tiny)
    assert frechet_distance(a, 2 * a) == pytest.approx(float(expected), rel=1e-6)
    b = torch.randn(5000, 3, generator=g)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(a, b[:, :2])


def test_an_untrained_classifier_scores_anything():
    model = build_classifier("classifier-small", in_channels=1, num_classes=3)
    images = torch.rand(16, 1, 32, 32)
    yardstick = Yardstick(model, images)
    score = yardstick.score(images, torch.zeros(16, dtype=torch.long))
    assert score["frechet_distance"] == pytest.approx(0.0, abs=1e-3) and 0 <= score["class_accuracy"] <= 1
    assert yardstick.chance == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one intended class per image"):
        yardstick.score(images, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("classifier,tokenizer,data,label", SHIPPED)
def test_the_yardstick_tells_real_from_random_tokens(classifier, tokenizer, data, label):
    model = load_model(CHECKPOINT_DIR / f"{classifier}.pt")
    decoder = load_model(CHECKPOINT_DIR / f"{tokenizer}.pt")
    train_images, _, _ = labelled_images(data, "train", label, 1024)
    test_images, test_classes, names = labelled_images(data, "test", label, 512)
    assert list(model.config.class_names) == names
    yardstick = Yardstick(model, train_images)
    references = yardstick.references(test_images, test_classes, decoder)
    g = torch.Generator().manual_seed(0)
    random_tokens = torch.randint(decoder.codebook_size, (512, *decoder.tokens_shape), generator=g)
    with torch.no_grad():
        noise = decoder.decode(random_tokens).clamp(0, 1)
    random = yardstick.score(noise, test_classes)
    assert references["floor"]["class_accuracy"] > 0.95 and references["ceiling"]["class_accuracy"] > 0.9
    assert random["class_accuracy"] < 3 * yardstick.chance
    assert random["frechet_distance"] > 10 * references["ceiling"]["frechet_distance"]


@pytest.mark.parametrize("classifier", [c for c, *_ in SHIPPED])
def test_shipped_classifier_reproduces_its_test_accuracy(classifier):
    metadata = read_metadata(CHECKPOINT_DIR / f"{classifier}.pt")
    test_set = metadata["test_set"]
    images, classes, _ = labelled_images(test_set["data"], "test", metadata["label"], test_set["n"])
    predicted, _ = predict(load_model(CHECKPOINT_DIR / f"{classifier}.pt"), images)
    accuracy = float((predicted == classes).float().mean())
    assert accuracy == pytest.approx(metadata["test_metrics"]["accuracy"], abs=1e-3)
    assert accuracy > 0.97


@pytest.mark.parametrize("data,label", [(d, l) for _, _, d, l in SHIPPED])
def test_images_in_turn_have_the_samples_class_proportions(data, label):
    images, classes, names = images_in_turn(data, "test", label, 100)
    assert torch.equal(classes, torch.arange(100) % len(names))
    pool, pool_classes, _ = labelled_images(data, "test", label, 400)
    for image, c in zip(images, classes):  # each one a real test image of the class it stands for
        match = (pool == image).flatten(1).all(1)
        assert match.sum() == 1 and pool_classes[match] == c
    assert len({image.numpy().tobytes() for image in images}) == 100  # none used twice


def test_images_in_turn_refuse_a_pool_without_enough_of_a_class():
    with pytest.raises(ValueError, match="images of class"):
        images_in_turn("digits", "test", "char", 40, pool=1)  # the first 40 digits lack four of some class


def test_the_floor_is_below_every_shipped_generator():
    """With the samples' class proportions, real test images are the best a generator can do: every shipped
    class-conditional generator's recorded distance is at least its floor's (random class proportions put the
    floor of shapes at 2.30, above flow-shapes' 0.57)."""
    generators = [n for n, r in RECIPES.items() if r.kind in ("gpt", "maskgit", "flow") and r.label is not None]
    assert len(generators) >= 6
    for name in generators:
        scores = read_metadata(CHECKPOINT_DIR / f"{name}.pt")["sample_metrics"]
        assert scores["floor"]["class_accuracy"] == 1.0, name
        assert scores["floor"]["frechet_distance"] <= scores["samples"]["frechet_distance"], name
