"""GET /api/audit against camlens.audit: the same shares, records and worst cases, bounded
sizes, and a clear refusal for a model the biased digits do not fit."""

from __future__ import annotations

import math

import numpy as np
from test_api import decode_png


def test_audit_gives_the_library_summary_records_and_worst_cases(client, catalog):
    from camlens.audit import audit
    from camlens.audit.builtin import AUDIT_DATA

    answer = client.get("/api/audit", params={"model": "digits-gap", "size": 12, "seed": 3,
                                              "worst": 3, "counterfactual": "false"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    data = AUDIT_DATA["biased-digits"](12, 3)
    expected = audit(catalog.models["digits-gap"].loaded.model, data.dataset, data.regions,
                     "gradcam", layer="features", keep=3, cue_key=data.cue_key)
    assert body["regions"] == ["object", "mark"] and body["layer"] == "features"
    assert len(body["records"]) == 12
    for got, want in zip(body["records"], expected.records, strict=True):
        assert got["index"] == want["index"] and got["prediction"] == want["prediction"]
        for region in ("object", "mark"):
            assert math.isclose(got["share"][region], want["share"][region], abs_tol=1e-5)
    assert body["overall"]["accuracy"] == expected.summary()["accuracy"]
    assert body["counterfactual"] is None
    for region in ("object", "mark"):
        cases = body["worst"][region]
        assert [case["index"] for case in cases] == [r["index"] for r in expected.top(region, 3)]
        shares = [case["share"][region] for case in cases]
        assert shares == sorted(shares, reverse=True)
        picture = decode_png(cases[0]["picture"])
        assert picture.ndim == 3 and picture.shape[0] >= 64 and np.ptp(picture) > 0
    assert body["command"].startswith("camlens audit --model digits-gap --data biased-digits")


def test_audit_refuses_what_it_cannot_audit(client):
    for params, status, words in [
        ({"model": "digits-captioner"}, 400, "cannot be audited on the built-in biased digits"),
        ({"model": "digits-gap", "size": 0}, 400, "size must be from 1 to 500"),
        ({"model": "digits-gap", "worst": 99}, 400, "worst must be from 0 to 16"),
        ({"model": "digits-gap", "method": "gradcma"}, 400, "gradcam"),
        ({"model": "nope"}, 404, "unknown model 'nope'"),
    ]:
        answer = client.get("/api/audit", params=params)
        assert answer.status_code == status, (params, answer.text)
        assert words in answer.json()["error"]
