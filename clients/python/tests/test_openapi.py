"""``GET /openapi.json`` against the live server, checked with ``jsonschema`` (an independent JSON Schema 2020-12
validator): requests the server answers are valid, requests it refuses for a reason a schema can state are not,
its answers validate, and each documented default is what the server does without the field.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Dict, List, Tuple

import msgpack
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from conftest import GOLDEN

W = np.random.default_rng(11).standard_normal((4, 8)).astype(np.float32)
ACT = np.random.default_rng(12).random(8).astype(np.float32)


def tensor(a: np.ndarray, dtype: str = "f32") -> Dict[str, Any]:
    data = a.astype(np.float16 if dtype == "f16" else np.float32).tobytes()
    return {"dtype": dtype, "shape": list(a.shape), "data": data}


LAYER = {"name": "l", "weight": tensor(W), "actNormSq": tensor(ACT)}


def post(url: str, body: Dict[str, Any]) -> Tuple[int, Any]:
    req = urllib.request.Request(
        url + "/v1/prune", data=msgpack.packb(body), headers={"Content-Type": "application/msgpack"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, msgpack.unpackb(r.read(), raw=False)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def doc(server_url: str) -> Dict[str, Any]:
    return get_json(server_url + "/openapi.json")


def validator(doc: Dict[str, Any], name: str) -> Draft202012Validator:
    schema = doc["components"]["schemas"][name]
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def with_layer(**fields: Any) -> Dict[str, Any]:
    return {**LAYER, **fields}


# Bodies the server answers 200.
ACCEPTED: Dict[str, Dict[str, Any]] = {
    "sparsity with the default pattern": {"sparsity": 0.5, "layers": [LAYER]},
    "nil pattern and method": {"pattern": None, "method": None, "sparsity": 0.5, "layers": [LAYER]},
    "row": {"pattern": "row", "sparsity": 0.25, "layers": [LAYER]},
    "N:M without sparsity": {"pattern": "2:4", "layers": [LAYER]},
    "N:M ignores an out-of-range sparsity": {"pattern": "2:4", "sparsity": 7, "layers": [LAYER]},
    "N:M ignores a sparsity of another type": {"pattern": "4:8", "sparsity": "x", "layers": [LAYER]},
    "inputs of no tokens": {"sparsity": 0.5, "layers": [with_layer(actNormSq=None, inputs=tensor(W[:0]))]},
    "inputs with a nil actNormSq": {"sparsity": 0.5, "layers": [with_layer(actNormSq=None, inputs=tensor(W))]},
    "f16 inputs": {"sparsity": 0.5, "layers": [with_layer(actNormSq=None, inputs=tensor(W, "f16"))]},
    "every return": {"sparsity": 0.5, "return": ["mask", "weight", "score"], "layers": [LAYER]},
    "data-free magnitude": {"method": "magnitude", "sparsity": 0.5, "layers": [with_layer(actNormSq=None)]},
    "exponent": {"method": "wanda", "sparsity": 0.5, "options": {"exponent": 2}, "layers": [LAYER]},
}

# Bodies the server refuses with 422 for a reason the request schema states: invalid_request, except where API.md
# names another code (an actNormSq whose shape is not [cols] is a shape_mismatch).
REFUSED: Dict[str, Dict[str, Any]] = {
    "no sparsity for the default pattern": {"layers": [LAYER]},
    "nil sparsity for row": {"pattern": "row", "sparsity": None, "layers": [LAYER]},
    "sparsity 1": {"sparsity": 1, "layers": [LAYER]},
    "negative sparsity": {"pattern": "row", "sparsity": -0.1, "layers": [LAYER]},
    "sparsity a string": {"sparsity": "0.5", "layers": [LAYER]},
    "unknown method": {"method": "sparsegpt", "sparsity": 0.5, "layers": [LAYER]},
    "bad pattern": {"pattern": "2-4", "layers": [LAYER]},
    "no layers": {"sparsity": 0.5, "layers": []},
    "unknown return": {"sparsity": 0.5, "return": ["mask", "grad"], "layers": [LAYER]},
    "negative exponent": {"sparsity": 0.5, "options": {"exponent": -1}, "layers": [LAYER]},
    "f16 actNormSq": {"sparsity": 0.5, "layers": [with_layer(actNormSq=tensor(ACT, "f16"))]},
    "actNormSq of rank 2": {
        "sparsity": 0.5,
        "layers": [with_layer(actNormSq={"dtype": "f32", "shape": [1, 8], "data": ACT.tobytes()})],
    },
    "weight of rank 1": {
        "sparsity": 0.5,
        "layers": [with_layer(weight={"dtype": "f32", "shape": [32], "data": W.tobytes()})],
    },
    "weight with no rows": {
        "sparsity": 0.5,
        "layers": [with_layer(weight={"dtype": "f32", "shape": [0, 8], "data": b""})],
    },
    "unknown dtype": {"sparsity": 0.5, "layers": [with_layer(weight={**tensor(W), "dtype": "f64"})]},
    "layer without a name": {"sparsity": 0.5, "layers": [{"weight": tensor(W), "actNormSq": tensor(ACT)}]},
    "actNormSq and inputs": {"sparsity": 0.5, "layers": [with_layer(inputs=tensor(W))]},
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_requests_and_their_answers_validate(server_url: str, doc: Dict[str, Any], case: str) -> None:
    body = ACCEPTED[case]
    errors = [e.message for e in validator(doc, "PruneRequest").iter_errors(body)]
    assert errors == [], f"the document refuses a request the server answers: {errors}"
    status, answer = post(server_url, body)
    assert status == 200, answer
    errors = [e.message for e in validator(doc, "PruneResponse").iter_errors(answer)]
    assert errors == [], errors


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_requests_are_invalid(server_url: str, doc: Dict[str, Any], case: str) -> None:
    body = REFUSED[case]
    status, answer = post(server_url, body)
    code = "shape_mismatch" if case == "actNormSq of rank 2" else "invalid_request"
    assert (status, answer["error"]["code"]) == (422, code), answer
    assert list(validator(doc, "Error").iter_errors(answer)) == []
    assert list(validator(doc, "PruneRequest").iter_errors(body)) != [], "the document accepts what the server refuses"


def test_golden_requests_validate(doc: Dict[str, Any]) -> None:
    names = sorted(GOLDEN.glob("*.request.msgpack"))
    assert names, "no golden requests"
    for path in names:
        body = msgpack.unpackb(path.read_bytes(), raw=False)
        assert list(validator(doc, "PruneRequest").iter_errors(body)) == [], path.name


def defaults(schema: Dict[str, Any]) -> List[Tuple[List[str], Any]]:
    """(path, default) of every property with a ``default``, nested objects (behind anyOf with null) included."""
    out: List[Tuple[List[str], Any]] = []
    for name, prop in schema.get("properties", {}).items():
        if "default" in prop:
            out.append(([name], prop["default"]))
        for sub in [prop, *prop.get("anyOf", [])]:
            if sub.get("type") == "object":
                out.extend(([name, *p], d) for p, d in defaults(sub))
    return out


def outcome(url: str, body: Dict[str, Any]) -> Any:
    """What the server makes of ``body``: its error code, or each layer's fields other than timings."""
    status, answer = post(url, body)
    if status != 200:
        return (status, answer["error"]["code"])
    return [(sorted(layer), layer["mask"], layer["stats"]) for layer in answer["layers"]]


# For each documented default: a body in which the field matters, and another value that changes the outcome (so
# that a wrong default would show).
DEFAULT_CASES: Dict[str, Tuple[Dict[str, Any], Any]] = {
    "method": ({"sparsity": 0.5, "layers": [LAYER]}, "magnitude"),
    "pattern": ({"sparsity": 0.5, "layers": [LAYER]}, "row"),
    "return": ({"sparsity": 0.5, "layers": [LAYER]}, ["mask", "score"]),
    # Without activations: zpruner needs them unless dataFree is true.
    "options.dataFree": ({"sparsity": 0.5, "options": {}, "layers": [with_layer(actNormSq=None)]}, True),
}


def test_documented_defaults_are_what_the_server_does(server_url: str, doc: Dict[str, Any]) -> None:
    found = dict((".".join(p), d) for p, d in defaults(doc["components"]["schemas"]["PruneRequest"]))
    assert set(found) == set(DEFAULT_CASES)
    for name, default in found.items():
        base, other = DEFAULT_CASES[name]

        def with_value(value: Any) -> Dict[str, Any]:
            body = {**base, "options": dict(base.get("options", {}))}  # the one nested map a default sits in
            *parents, key = name.split(".")
            target = body
            for p in parents:
                target = target[p]
            target[key] = value
            return body

        omitted = outcome(server_url, base)
        assert outcome(server_url, with_value(default)) == omitted, name
        assert outcome(server_url, with_value(other)) != omitted, f"{name}: {other!r} changes nothing here"


def test_exponent_defaults_in_the_document_are_the_servers(server_url: str, doc: Dict[str, Any]) -> None:
    options = next(
        s for s in doc["components"]["schemas"]["PruneRequest"]["properties"]["options"]["anyOf"] if "properties" in s
    )
    text = options["properties"]["exponent"]["description"]
    for method in ("zpruner", "wanda", "ria"):
        documented = float(text.split(f" for {method}")[0].split()[-1])
        base = {"method": method, "sparsity": 0.5, "return": ["score"], "layers": [LAYER]}
        _, implicit = post(server_url, base)
        _, explicit = post(server_url, {**base, "options": {"exponent": documented}})
        assert implicit["layers"][0]["score"] == explicit["layers"][0]["score"], method
        _, other = post(server_url, {**base, "options": {"exponent": documented + 0.5}})
        assert other["layers"][0]["score"] != implicit["layers"][0]["score"], method


def test_other_routes_answer_as_documented(server_url: str, doc: Dict[str, Any]) -> None:
    paths = doc["paths"]
    assert paths["/healthz"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Health"
    )
    assert list(validator(doc, "Health").iter_errors(get_json(server_url + "/healthz"))) == []
    assert list(validator(doc, "Info").iter_errors(get_json(server_url + "/v1/info"))) == []
    for listed in ("429", "503"):
        assert "Retry-After" in paths["/v1/prune"]["post"]["responses"][listed]["headers"], listed
    status, answer = post(server_url, {"sparsity": 0.5})
    assert status == 422 and list(validator(doc, "Error").iter_errors(answer)) == []
