"""The reference models over seeds: which weights a seed uses, the page's intervals and the
audit's figures (no training: the trainer is replaced where a test would reach it)."""

from __future__ import annotations

import pytest
from safetensors.torch import save_file

from camlens.experiments import model_seeds
from camlens.experiments.model_seeds import (
    AUDIT_FIGURES,
    audit_figures,
    model_seeds_table,
    render,
    seed_weights,
)
from camlens.metrics.intervals import seed_interval
from camlens.zoo.registry import get_weights


def _fake_weights(path, name: str, seed: int, epochs: str = "8") -> None:
    state = {key: value.contiguous() for key, value in
             get_weights(name).load().state_dict().items()}
    save_file(state, str(path), metadata={"name": name, "seed": str(seed), "epochs": epochs,
                                          "train_size": "16000"})


@pytest.fixture
def no_training(monkeypatch):
    calls = []

    def fake_train(name, *, seed, out, progress=False):
        calls.append((name, seed, out))
        _fake_weights(out, name, seed)
        return {}

    monkeypatch.setattr("camlens.experiments.training.train", fake_train)
    return calls


def test_seed_zero_is_the_shipped_file_only_when_its_metadata_says_so(tmp_path, no_training):
    path, source = seed_weights("digits-biased", 0, cache_dir=tmp_path)
    assert path == get_weights("digits-biased").file and source.startswith("shipped")
    assert not no_training
    # Seed 1 is not what the shipped file holds: trained into the cache.
    path, source = seed_weights("digits-biased", 1, cache_dir=tmp_path)
    assert path == tmp_path / "digits-biased-seed1.safetensors"
    assert no_training == [("digits-biased", 1, path)] and source.startswith("trained")
    # ... and reused after.
    assert seed_weights("digits-biased", 1, cache_dir=tmp_path)[0] == path
    assert len(no_training) == 1
    # Not the shipped file when asked not to.
    seed_weights("digits-biased", 0, cache_dir=tmp_path, use_shipped=False)
    assert no_training[-1][:2] == ("digits-biased", 0)


def test_a_cached_file_made_by_another_recipe_is_trained_again(tmp_path, no_training):
    stale = tmp_path / "digits-biased-seed2.safetensors"
    _fake_weights(stale, "digits-biased", 2, epochs="3")
    seed_weights("digits-biased", 2, cache_dir=tmp_path)
    assert no_training == [("digits-biased", 2, stale)]


def test_unknown_models_are_refused_by_name():
    with pytest.raises(ValueError, match="digits-gap.*model-seeds covers"):
        model_seeds_table(models=("digits-gap",))


def _runs():
    accuracy = {"digits-biased": (0.83, 0.85, 0.80), "digits-debiased": (0.99, 0.98, 0.995)}
    runs = []
    for name, values in accuracy.items():
        for seed, value in enumerate(values):
            figures = {key: float(index + seed) for index, key in enumerate(AUDIT_FIGURES)}
            if name == "digits-biased":
                figures["mark_share"] = 1.0 + seed
            runs.append({"model": name, "seed": seed, "source": "trained here",
                         "accuracy": value, "test_items": 2000, "audit_size": 100,
                         "audit": figures})
    return runs


def test_page_has_each_seed_with_wilson_and_the_mean_with_a_t_interval():
    page = render(_runs(), (0, 1, 2), ("digits-biased", "digits-debiased"), 100, 1.0)
    mean, low, high = seed_interval([83.0, 85.0, 80.0])
    row = next(line for line in page.splitlines() if line.startswith("| digits-biased |"))
    assert f"{mean:.1f} [{low:.1f}, {high:.1f}]" in row
    assert "83.0 [81.3, 84.6]" in row  # 1,660 of 2,000: its Wilson interval
    assert "Partial" not in page


def test_audit_difference_is_paired_by_seed():
    page = render(_runs(), (0, 1, 2), ("digits-biased", "digits-debiased"), 100, 1.0)
    row = next(line for line in page.splitlines()
               if line.startswith(f"| {AUDIT_FIGURES['mark_share']} |"))
    index = list(AUDIT_FIGURES).index("mark_share")
    differences = [1.0 + seed - (index + seed) for seed in range(3)]
    mean, low, high = seed_interval(differences)
    assert row.endswith(f"| {mean:.3f} [{low:.3f}, {high:.3f}] |")


def test_partial_pages_say_how_far_they_got():
    page = render(_runs()[:2], (0, 1, 2), ("digits-biased", "digits-debiased"), 100, 1.0,
                  planned=6)
    assert "**Partial: 2 of the 6 runs" in page


def test_audit_figures_of_the_shipped_biased_model_flag_the_mark():
    figures = audit_figures(get_weights("digits-biased").load(), size=40)
    assert set(figures) == set(AUDIT_FIGURES)
    assert figures["accuracy_aligned"] > figures["accuracy_flipped"]
    assert figures["mark_lift"] > 1  # more mass on the mark than a uniform map
    unbiased = audit_figures(get_weights("digits-debiased").load(), size=40)
    assert unbiased["mark_lift"] < 1


def test_table_resumes_from_its_json(tmp_path, monkeypatch, no_training):
    out = tmp_path / "seeds.md"
    scored = []

    def fake_scores(model, task, data):
        scored.append(model)
        return {"accuracy": 0.9, "test_items": 10}

    monkeypatch.setattr(model_seeds, "score_model", fake_scores)
    monkeypatch.setattr(model_seeds, "_test_data", lambda name, progress: (None, {}))
    model_seeds_table(out, seeds=(0, 1), models=("accent-cnn",), cache_dir=tmp_path)
    assert len(scored) == 2 and out.is_file() and out.with_suffix(".json").is_file()
    page = model_seeds_table(out, seeds=(0, 1), models=("accent-cnn",), cache_dir=tmp_path)
    assert len(scored) == 2  # both reused
    assert "| accent-cnn | test accuracy | 10 |" in page


def test_without_training_missing_seeds_are_left_out_and_the_page_says_so(tmp_path,
                                                                        no_training,
                                                                        monkeypatch):
    monkeypatch.setattr(model_seeds, "score_model",
                        lambda model, task, data: {"accuracy": 0.9, "test_items": 10})
    monkeypatch.setattr(model_seeds, "_test_data", lambda name, progress: (None, {}))
    page = model_seeds_table(tmp_path / "seeds.md", seeds=(0, 1), models=("accent-cnn",),
                             cache_dir=tmp_path, train_missing=False)
    assert not no_training
    assert "**Partial: 1 of the 2 runs" in page and "| accent-cnn | test accuracy | 10 |" in page
