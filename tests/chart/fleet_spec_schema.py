"""values.schema.json's `fleet.spec` is the GameFleet CRD's spec schema made strict JSON Schema:
generated from gamefleet_operator.crd, so the chart refuses exactly what the CRD describes
(unknown fields included, which the API server would otherwise drop without a word), and a
test fails when the two drift. `image` is optional there: the chart fills in its own image.

Regenerate after a CRD change:  .venv/bin/python -m tests.chart.fleet_spec_schema
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from gamefleet_operator.crd import crd

VALUES_SCHEMA = Path(__file__).resolve().parents[2] / "charts" / "gamefleet" / "values.schema.json"
DESCRIPTION = (
    "The GameFleet spec (operator/README.md, 'The spec'), generated from the CRD. "
    "image defaults to the chart's image; telemetry.tracing.otlpEndpoint to the bundled Jaeger "
    "or tracing.otlpEndpoint."
)


def _strict(node: Any) -> Any:
    """Drop the x-kubernetes-* extensions; objects with named properties refuse any other."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def fleet_spec_schema() -> dict[str, Any]:
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    schema = _strict(copy.deepcopy(spec))
    schema["required"] = [name for name in schema.get("required", []) if name != "image"]
    if not schema["required"]:
        del schema["required"]
    return schema | {"description": DESCRIPTION}


def values_schema_with_current_spec() -> dict[str, Any]:
    schema = json.loads(VALUES_SCHEMA.read_text())
    schema["properties"]["fleet"]["properties"]["spec"] = fleet_spec_schema()
    return schema


if __name__ == "__main__":
    VALUES_SCHEMA.write_text(json.dumps(values_schema_with_current_spec(), indent=2) + "\n")
    print(f"wrote {VALUES_SCHEMA}")
