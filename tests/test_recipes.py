"""Checkpoint recipes: any kind of model, made after the checkpoints it builds on."""
import pytest

from course_lib.engine.training import TrainConfig
from course_lib.notebook.live import shipped_or_live
from course_lib.tools.recipes import BUILDERS, RECIPES, Recipe, build_order, depth

CONFIG = TrainConfig(steps=2, batch_size=4)


def _recipes(**needs):
    return {name: Recipe("tokenizer", "vq-f4", "shapes", CONFIG, needs=tuple(n)) for name, n in needs.items()}


def test_what_a_recipe_needs_is_made_first():
    recipes = _recipes(gpt=["tok", "yardstick"], tok=[], yardstick=[], maskgit=["tok"])
    order = build_order(["gpt", "maskgit"], recipes)
    assert sorted(order) == ["gpt", "maskgit", "tok", "yardstick"]
    assert order.index("tok") < order.index("gpt") and order.index("yardstick") < order.index("gpt")
    assert order.index("tok") < order.index("maskgit")
    assert [depth(n, recipes) for n in ("tok", "gpt", "maskgit")] == [0, 1, 1]


def test_unknown_needs_and_cycles_are_refused():
    with pytest.raises(ValueError, match=r"unknown recipe 'tok' \(needed by gpt\)"):
        build_order(["gpt"], _recipes(gpt=["tok"]))
    with pytest.raises(ValueError, match="cycle"):
        build_order(["a"], _recipes(a=["b"], b=["a"]))


def test_every_shipped_recipe_has_a_builder_and_known_needs():
    assert build_order(list(RECIPES)) and all(r.kind in BUILDERS for r in RECIPES.values())


def test_shipped_or_live_loads_what_is_shipped_and_trains_what_is_not(tmp_path, capsys):
    from course_lib.tokenizers.tokenizer import build_tokenizer
    from course_lib.engine.checkpoints import save_checkpoint
    calls = []

    def train_fn():
        calls.append(1)
        return build_tokenizer("ae-f4").train()
    model, source = shipped_or_live("ae-f4-shapes", train_fn, folder=tmp_path)
    assert (source, len(calls), model.training) == ("live", 1, False)
    assert "NOTE: ae-f4-shapes.pt is not in" in capsys.readouterr().out
    save_checkpoint(tmp_path / "ae-f4-shapes.pt", model, {"steps": 7, "data": "shapes", "train_images": 64})
    loaded, source = shipped_or_live("ae-f4-shapes", train_fn, folder=tmp_path)
    assert (source, len(calls)) == ("shipped", 1) and "loaded shipped ae-f4-shapes.pt: 7 training steps" in capsys.readouterr().out


def test_game_history_keeps_the_rows_where_the_discriminator_plays():
    from course_lib.tools.recipes import game_history
    history = [{"step": 10, "loss": 1.0, "recon": 0.1}, {"step": 20, "loss": 0.9, "recon": 0.1, "d_loss": 1.0,
                                                         "g_hinge": 0.1, "lr": 1e-4}]
    assert game_history(history) == [{"step": 20, "d_loss": 1.0, "g_hinge": 0.1, "recon": 0.1}]


def test_the_vqgan_recipe_fine_tunes_a_shipped_tokenizer_with_the_feature_network():
    recipe = RECIPES["vqgan-f4-photos"]
    kinds = sorted(RECIPES[n].kind for n in recipe.needs)
    assert kinds == ["feature-net", "tokenizer"] and recipe.kind == "vqgan"
    tokenizer = next(n for n in recipe.needs if RECIPES[n].kind == "tokenizer")
    assert RECIPES[tokenizer].preset == recipe.preset and not recipe.overrides  # same bits per image
    assert depth("vqgan-f4-photos") == 1
