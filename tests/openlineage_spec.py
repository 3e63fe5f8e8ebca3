"""OpenLineage events judged against the spec, offline: `../shared/openlineage-spec/` (core
2-0-2 and the standard facets, JSON Schema draft 2020-12) in a `referencing.Registry`, with
jsonschema; dataprep's own facet against `pipeline/openlineage_facet.json`.

`check_event(event)` validates the event against the core schema's RunEvent, then every facet
against the schema its `_schemaURL` names, under the key that schema defines."""

from __future__ import annotations

import functools
import glob
import json
import os
from typing import Dict, Iterator, List, Tuple

from tests.conftest import ROOT

SPEC = os.path.normpath(os.path.join(ROOT, "..", "shared", "openlineage-spec"))
CUSTOM = os.path.join(ROOT, "pipeline", "openlineage_facet.json")
CORE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


@functools.lru_cache(maxsize=1)
def _registry():
    from referencing import Registry, Resource

    paths = [os.path.join(SPEC, "OpenLineage.json"), *sorted(glob.glob(os.path.join(SPEC, "facets", "*.json"))), CUSTOM]
    if not os.path.exists(paths[0]):
        raise FileNotFoundError(f"{SPEC}: the OpenLineage spec must sit beside the repo (../shared/openlineage-spec)")
    schemas = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            schema = json.load(f)
        schemas[schema["$id"]] = schema
    return Registry().with_resources((i, Resource.from_contents(s)) for i, s in schemas.items()), schemas


def _validator(schema):
    from jsonschema import Draft202012Validator

    registry, _ = _registry()
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _facets(event: Dict) -> Iterator[Tuple[str, str, Dict]]:
    """(where, key, facet) of every facet in the event."""
    yield from (("run", k, v) for k, v in (event["run"].get("facets") or {}).items())
    yield from (("job", k, v) for k, v in (event["job"].get("facets") or {}).items())
    for side, extra in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        for ds in event.get(side) or []:
            for group in ("facets", extra):
                yield from ((f"{side}:{ds['name']}", k, v) for k, v in (ds.get(group) or {}).items())


def check_event(event: Dict) -> List[str]:
    """Validates one event (as JSON, a dict); returns the facet schemas it was checked against.

    Raises:
      jsonschema.ValidationError: the event or a facet breaks the spec.
      AssertionError: a facet names a schema the spec does not have, or sits under a key
        other than the one its schema defines.
    """
    _validator({"$ref": f"{CORE_ID}#/$defs/RunEvent"}).validate(event)
    _, schemas = _registry()
    used = []
    for where, key, facet in _facets(event):
        url = facet.get("_schemaURL", "")
        schema_id = url.split("#", 1)[0]
        assert schema_id in schemas, f"{where}: facet {key!r} names {url!r}, not a schema of the spec"
        schema = schemas[schema_id]
        assert key in schema.get("properties", {}), \
            f"{where}: facet {key!r} sits under a key its schema ({schema_id}) does not define: {list(schema['properties'])}"
        _validator({"$ref": schema_id}).validate({key: facet})
        used.append(schema_id)
    return used


def read_events(path: str) -> List[Dict]:
    """The events the file transport wrote (`append: true`: one JSON object a line)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
