"""The pooling experiment's figures and page, on tiny untrained models and hand-made recordings
(no eSpeak, no training)."""

from __future__ import annotations

import pytest
import torch

from camlens.data.speech import Recording, WordStamp
from camlens.experiments.audio_batches import RaggedWaveforms
from camlens.experiments.pooling import (
    EVALUATED_KINDS,
    MODELS,
    evaluate_model,
    pooling_figure,
    render,
    summarize,
)
from camlens.zoo.accent import AccentAttention

RATE = 16000


def recording(index: int, kind: str) -> Recording:
    """1.5 s of noise: words at 0.2-0.6 s (accent voice) and 0.8-1.3 s (neutral or accent)."""
    generator = torch.Generator().manual_seed(index)
    label = index % 2
    accent = ("en-gb", "en-us")[label]
    neutral = {"whole": accent, "mixed": "en-029",
               "mixed-family": ("en-gb-x-rp", "en-us-nyc")[(index // 2) % 2]}[kind]
    words = [WordStamp("car", 0.2, 0.6, True, accent),
             WordStamp("big", 0.8, 1.3, kind == "whole", neutral)]
    return Recording(0.3 * torch.randn(int(1.5 * RATE), generator=generator), RATE, label,
                     words, [])


@pytest.fixture(scope="module")
def records():
    data = {}
    for kind in EVALUATED_KINDS:
        recordings = [recording(index, kind) for index in range(4)]
        data[kind] = (RaggedWaveforms([item.waveform for item in recordings]), recordings)
    out = []
    for name, pooling in zip(MODELS, ("attention", "mean"), strict=True):
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = AccentAttention(channels=8, embedding=8, hidden=4, attention_dim=4,
                                    pooling=pooling).eval()
            out.append({"model": name, "seed": seed, "train_seconds": 1.0,
                        "results": evaluate_model(model, data, permutations=10)})
    return out


def test_each_seed_has_accuracy_with_its_wilson_interval(records):
    for record in records:
        for kind in EVALUATED_KINDS:
            entry = record["results"][kind]
            assert entry["total"] == 4 and entry["accuracy"] == entry["correct"] / 4
            low, high = entry["wilson"]
            assert 0 <= low <= entry["accuracy"] <= high <= 1
        family = record["results"]["mixed-family"]
        # 2 congruent and 2 incongruent recordings: the overall accuracy is their mean
        assert family["accuracy"] == pytest.approx(
            (family["congruent_accuracy"] + family["incongruent_accuracy"]) / 2)


def test_mass_and_permutation_figures_where_they_apply(records):
    for record in records:
        results = record["results"]
        assert "mass" not in results["whole"]
        for kind in ("mixed", "mixed-family"):
            mass = results[kind]["mass"]
            assert 0 < mass["uniform_informative"] < 1 and 0 < mass["uniform_neutral"] < 1
            if record["model"] == "accent-mean":  # uniform weights are its own
                assert mass["informative"] == pytest.approx(mass["uniform_informative"])
                assert mass["per_second_ratio"] == pytest.approx(1.0)
        for kind in EVALUATED_KINDS:
            test = results[kind].get("permutation")
            assert (test is not None) == (record["model"] == "accent-attention")
            if test is not None:
                assert 0 <= test["median_tvd"] <= test["median_max_tvd"] <= 1
                assert 0 <= test["all_survive"] <= test["survival"] <= 1


def test_summary_intervals_and_the_page(records):
    summary = summarize(records)
    for model in MODELS:
        for kind in EVALUATED_KINDS:
            mean, low, high = summary[model][kind]["accuracy"]
            seeds = [r["results"][kind]["accuracy"] for r in records if r["model"] == model]
            assert mean == pytest.approx(sum(seeds) / 2) and low <= mean <= high
    for kind in EVALUATED_KINDS:
        assert summary["difference"][kind][0] == pytest.approx(
            summary[MODELS[0]][kind]["accuracy"][0] - summary[MODELS[1]][kind]["accuracy"][0])
    page = render(records, summary, header=["# title"])
    assert page.startswith("# title")
    for heading in ("## Accuracy", "## Attention mass", "## Permutation test"):
        assert heading in page
    assert "| attention - mean (points) |" in page
    per_seed = [line for line in page.splitlines() if line.startswith("| accent-")
                and line.split("|")[2].strip() in ("0", "1")]
    assert len(per_seed) == 4  # two models x two seeds
    permutation_rows = page.split("## Permutation test")[1].splitlines()
    assert sum(line.startswith(f"| {kind} |") for line in permutation_rows
               for kind in EVALUATED_KINDS) == 3


def test_the_figure_is_written(records, tmp_path):
    path = pooling_figure(records, tmp_path / "pooling.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
