"""The cached chat adapter (minigemma.train.chat_tuning, `minigemma tune`, load(adapter="chat")):
made once, reused only when the recipe and the examples are the same, rebuilt when damaged, and
used by `minigemma chat`. One LoRA step of the real 270M stands in for the 40 of the recipe."""

import json

import pytest
import torch

import minigemma
from minigemma.cli import main
from minigemma.errors import ModelNotFoundError
from minigemma.loading import adapter as adapter_module
from minigemma.model.lora import lora_layers
from minigemma.train import chat_tuning
from minigemma.train.chat_tuning import Recipe, answers, cached_chat_adapter, make_chat_adapter

QUICK = Recipe(steps=1, batch_size=2, warmup=0)
# Nothing here depends on float rounding, so it is not marked `numerics` (no second CPU-path run).


def untrained(model, tok, recipe=QUICK, **kwargs):
    """tune_chat's stand-in where only the caching is tested: the adapters, untrained."""
    from minigemma.model.lora import add_lora
    from minigemma.train import History

    add_lora(model, rank=recipe.rank, alpha=recipe.alpha, targets=recipe.targets)
    return History(loss=[1.0] * recipe.steps)


@pytest.fixture
def adapter_home(tmp_path, monkeypatch):
    where = tmp_path / "adapters" / "gemma3-270m-chat"
    monkeypatch.setattr(adapter_module, "chat_adapter_dir", lambda: where)
    monkeypatch.setattr(chat_tuning, "chat_adapter_dir", lambda: where)
    return where


def test_no_chat_adapter_yet_says_how_to_make_it(adapter_home):
    with pytest.raises(ModelNotFoundError, match="minigemma tune"):
        minigemma.load("gemma3-270m", adapter="chat")


def test_made_once_then_reused_and_rebuilt_when_damaged_or_the_recipe_changes(adapter_home, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(chat_tuning, "tune_chat", lambda *a, **k: calls.append(1) or untrained(*a, **k))
    where = make_chat_adapter(QUICK, progress=False)
    assert where == adapter_home
    assert "the adapter goes to" in capsys.readouterr().err  # one line saying what and where
    assert {p.name for p in where.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                 "history.json", "made_from.json"}
    assert len(json.loads((where / "history.json").read_text())["loss"]) == 1
    assert cached_chat_adapter(QUICK) == where
    make_chat_adapter(QUICK, progress=False)
    assert calls == [1]  # the same recipe: the cached adapter
    other = Recipe(steps=2, batch_size=2, warmup=0)
    assert cached_chat_adapter(other) is None
    make_chat_adapter(other, progress=False)
    assert calls == [1, 1]  # another recipe: trained again, in place of the old one
    assert len(json.loads((where / "history.json").read_text())["loss"]) == 2
    (where / "adapter_model.safetensors").unlink()  # damaged
    assert cached_chat_adapter(other) is None
    make_chat_adapter(other, progress=False)
    assert calls == [1, 1, 1]
    assert not list(where.parent.glob(".*.tmp"))  # nothing half-written left behind


def test_load_chat_attaches_the_trained_adapter(adapter_home):
    make_chat_adapter(QUICK, progress=False)
    model, tok = minigemma.load("gemma3-270m", adapter="chat")
    layers = lora_layers(model)
    assert len(layers) == 7 * model.config.num_layers  # all-linear
    assert any(m.lora_B.abs().sum() > 0 for m in layers.values())  # trained, not the zero init
    base, _ = minigemma.load("gemma3-270m")
    ids = torch.tensor([tok.encode("Hello", add_bos=True)])
    with torch.no_grad():
        assert not torch.allclose(model(ids), base(ids))
    [(text, ended)] = answers(model, tok, ["Name a colour."], max_new_tokens=4)
    assert isinstance(text, str) and isinstance(ended, bool)
    assert not any(m.merged for m in layers.values())  # answers merged only for the duration


def test_cli_chat_says_which_model_it_runs(adapter_home, capsys, monkeypatch):
    """Without the adapter: a note that the model is a base one and how to tune it; with it: that it is used."""
    import io

    monkeypatch.setattr(chat_tuning, "tune_chat", untrained)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["chat"]) == 0
    err = capsys.readouterr().err
    assert "is a base model" in err and "minigemma tune" in err
    make_chat_adapter(QUICK, progress=False)
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["chat"]) == 0
    assert "with its chat adapter from" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["chat", "--adapter", "none"]) == 0
    assert "adapter" not in capsys.readouterr().err


def test_cli_tune_makes_it_once(adapter_home, capsys, monkeypatch):
    monkeypatch.setattr(chat_tuning, "tune_chat", untrained)
    assert main(["tune"]) == 0
    assert "saved" in capsys.readouterr().out
    assert main(["tune"]) == 0
    assert "already made" in capsys.readouterr().out
