"""Explanations: additivity, the right words get the credit, tree and permutation paths, safe HTML."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_tables

from trafficcore.data.panel import load_panel
from trafficcore.data.windows import WindowSpec, issue_grid
from trafficcore.explain import explain, global_importance, phrases, tokens_html


class WordModel:
    """A transparent text+numbers model: last reading + 10 per 'concert' + 0.5 x last week."""

    name = "word-model"
    reads_text = True  # the `ReadsText` capability: explanations credit its phrases

    def __init__(self):
        self.spec = WindowSpec(history_steps=8, horizons_min=(15, 30), n_neighbours=2)

    def text_parts(self, panel, samples, note=None):
        from trafficcore.data.windows import context_fields
        from trafficcore.text import context_parts

        return [context_parts(context_fields(panel, int(d), int(r), self.spec), note=note)
                for d, r in zip(samples.detector_idx, samples.issue_idx, strict=True)]

    def predict_samples(self, panel, samples):
        return self.predict_with_texts(panel, samples, [" ".join(p) for p in self.text_parts(panel, samples)])

    def predict_with_texts(self, panel, samples, texts):
        bump = np.array([10.0 * t.lower().split().count("concert") for t in texts])
        p50 = samples.history[:, -1] + bump + 0.5 * np.nan_to_num(samples.last_week[:, 0])
        p50 = np.repeat(p50[:, None], len(self.spec.horizons_min), axis=1)
        return np.stack([p50 - 5, p50, p50 + 5], axis=-1)


@pytest.fixture
def panel(store):
    t = tiny_tables()
    t.events = pd.DataFrame(
        {
            "event_id": ["e1"],
            "start_ts": pd.to_datetime(["2025-01-10 19:00"]),
            "end_ts": pd.to_datetime(["2025-01-10 22:00"]),
            "lat": [52.0],
            "lon": [5.0],
            "site_id": ["A"],
            "kind": ["concert"],
            "text": ["<script>alert(1)</script> concert <img src=x onerror=alert(2)>"],
            "source": ["user"],
        }
    )
    store.ingest("ev", t)
    return load_panel(store, "ev")


def test_additive_and_credits_the_event_words(panel):
    e = explain(WordModel(), panel, "A:N", "2025-01-10 18:30", 30)
    assert e.total() == pytest.approx(e.prediction, rel=1e-3)
    by_token = {t["token"]: t["value"] for t in e.tokens}
    assert by_token["concert"] == pytest.approx(10.0, abs=1e-6)
    top = max(e.tokens, key=lambda t: t["value"])
    assert top["token"] == "concert"
    values = {f["name"]: f["value"] for f in e.features}
    assert values["neighbours"] == pytest.approx(0.0) and values["calendar"] == pytest.approx(0.0)
    assert abs(values["last interval"]) > 0  # the newest reading moved the forecast away from typical


def test_user_text_is_escaped(panel):
    e = explain(WordModel(), panel, "A:N", "2025-01-10 18:30", 30)
    out = tokens_html(e)
    assert "<script>" not in out and "<img" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&lt;img" in out


def test_note_changes_the_forecast(panel):
    plain = explain(WordModel(), panel, "C:S", "2025-01-10 18:30", 30)
    noted = explain(WordModel(), panel, "C:S", "2025-01-10 18:30", 30, note="Concert at the stadium at 7 pm")
    assert noted.prediction == pytest.approx(plain.prediction + 10)
    # the model read the note restated relative to the issue time (trafficcore.notes), and the page says so
    assert noted.note_read == "Concert at the stadium (starts in 30 min)."
    assert dict(phrases(noted))["Concert at the stadium (starts in 30 min)."] == pytest.approx(10.0)
    assert noted.note_recognised == [{"kind": "start", "words": "at 7 pm", "meaning": "starts in 30 min"}]
    assert noted.without_note == pytest.approx(plain.prediction)
    assert "The note moves it by +10 veh" in noted.summary


def test_a_model_that_reads_no_text_ignores_a_note(panel):
    class Numbers(WordModel):
        reads_text = False

    e = explain(Numbers(), panel, "C:S", "2025-01-10 18:30", 30, note="Concert at the stadium at 7 pm")
    assert e.text == "" and e.note_read == "" and e.without_note is None and "note" not in e.summary


def test_gradient_boosting_tree_explainer(panel):
    from trafficcore.models.baselines import GradientBoosting

    spec = WindowSpec(history_steps=8, horizons_min=(15, 30), n_neighbours=2)
    rows = issue_grid(panel, spec=spec)
    m = GradientBoosting(spec=spec, max_rounds=30).fit(
        panel, rows[rows < 96 * 10], rows[(rows >= 96 * 10) & (rows < 96 * 12)]
    )
    e = explain(m, panel, "B:N", "2025-01-13 08:00", 30)
    assert e.total() == pytest.approx(e.prediction, rel=1e-3)
    assert not e.tokens and e.features
    fi, ti = global_importance(WordModel(), panel, [("A:N", "2025-01-10 18:30"), ("B:N", "2025-01-10 18:30")])
    assert set(fi["name"]) >= {"last interval", "neighbours"} and (fi["mean_abs"] >= 0).all()


class PartsModel(WordModel):
    """WordModel that, like the language model, says how its context text is made of phrases."""

    def text_parts(self, panel, samples, note=None):
        parts = ["Live concert tonight. Capacity crowd of 5,000 (starts in 30 min).", "Site A."]
        return [parts + ([note] if note else [])] * len(samples)


def test_an_event_phrase_with_several_sentences_stays_one_phrase(panel):
    e = explain(PartsModel(), panel, "A:N", "2025-01-10 18:30", 30)
    ph = dict(phrases(e))
    assert list(ph) == ["Live concert tonight. Capacity crowd of 5,000 (starts in 30 min).", "Site A."]
    assert ph["Live concert tonight. Capacity crowd of 5,000 (starts in 30 min)."] == pytest.approx(10.0)
    assert e.total() == pytest.approx(e.prediction, rel=1e-3)
    noted = explain(PartsModel(), panel, "A:N", "2025-01-10 18:30", 30, note="Another concert nearby.")
    assert dict(phrases(noted))["Another concert nearby."] == pytest.approx(10.0)


def test_explanation_cache_is_bounded_and_never_serves_a_dead_objects_entry():
    from trafficcore.explain import _ObjectCache

    class Obj:
        pass

    cache = _ObjectCache(2)
    a = Obj()
    cache.put((a,), ("x",), 1)
    assert cache.get((a,), ("x",)) == 1 and cache.get((a,), ("y",)) is None
    del a
    b = Obj()  # may reuse the dead object's id: it must not see the old entry
    assert cache.get((b,), ("x",)) is None
    objs = [Obj() for _ in range(3)]
    for i, o in enumerate(objs):
        cache.put((o,), ("x",), i)
    assert cache.get((objs[0],), ("x",)) is None  # evicted: the cache holds 2
    assert cache.get((objs[2],), ("x",)) == 2


def test_speed_benchmark_measures_fresh_calls_then_answers_them_from_the_cache(panel):
    from trafficcore.evaluation.explain_speed import cases, measure

    todo = cases(panel, WordModel(), 5)
    assert len(todo) == 5 and {h for _, _, h in todo} <= {15, 30}
    for det, at, _ in todo:
        row = panel.index_of(at)
        assert det in set(panel.detectors["detector_id"]) and row >= WordModel().spec.history_steps
    r = measure(WordModel(), panel, 5)
    assert r["n"] == 5 and r["players_median"] > 0
    assert r["cached_s"] < r["warm_median_s"]  # the cache answers without recomputing
