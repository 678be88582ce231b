"""Check imgate's docs/openapi.yaml and real replies against it.

Usage:
  openapi_check.py SPEC routes
      validate SPEC as OpenAPI 3.1, print [[method, path, [listener...]]...]
      (listener: "http" for the client server, "admin" for the admin one)
  openapi_check.py SPEC validate < exchanges.json
      exchanges: [{"method","path" (the spec's template),"status","body",
      "expect_invalid"?}]; each body is validated against the schema of the
      operation's response for that status (or `default`). Prints
      {"checked": n, "errors": [...]}: an error for every undocumented
      route or status, every body that does not validate, and every
      `expect_invalid` body that does.
"""
import json
import sys

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "urn:imgate:openapi"
METHODS = ("get", "post", "put", "delete", "patch", "head", "options")


def load(path):
    with open(path, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    validate_spec(spec)
    return spec


def listeners(spec, item):
    out = []
    for server in item.get("servers", spec.get("servers", [])):
        url = server["url"]
        out.append("admin" if url.endswith(":18080") else "http")
    return out


def routes(spec):
    rows = []
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                rows.append([method.upper(), path, listeners(spec, item)])
    return rows


def response_schema(spec, method, path, status):
    item = spec["paths"].get(path)
    if item is None or method.lower() not in item:
        return None, f"{method} {path} is not in the spec"
    responses = item[method.lower()]["responses"]
    resp = responses.get(str(status)) or responses.get("default")
    if resp is None:
        return None, f"{method} {path}: status {status} is not documented"
    content = resp.get("content", {})
    media = content.get("application/json")
    if media is None:
        return None, f"{method} {path} {status}: no JSON reply documented"
    return media["schema"], None


def check(spec, exchanges):
    errors = []
    for ex in exchanges:
        where = f"{ex['method']} {ex['path']} -> {ex['status']}"
        schema, problem = response_schema(spec, ex["method"], ex["path"], ex["status"])
        if problem:
            errors.append(problem)
            continue
        # The reply's schema, added to the spec so that its $refs resolve.
        doc = dict(spec)
        doc["components"] = dict(spec["components"])
        doc["components"]["schemas"] = dict(spec["components"]["schemas"], _reply=schema)
        reg = Registry().with_resource(BASE, Resource.from_contents(doc, default_specification=DRAFT202012))
        validator = Draft202012Validator({"$ref": BASE + "#/components/schemas/_reply"}, registry=reg)
        found = sorted(validator.iter_errors(ex["body"]), key=lambda e: list(e.path))
        if ex.get("expect_invalid"):
            if not found:
                errors.append(f"{where}: a body expected to be invalid validated: {json.dumps(ex['body'])}")
            continue
        for e in found:
            at = "/".join(str(p) for p in e.absolute_path)
            errors.append(f"{where}: at /{at}: {e.message}")
    return {"checked": len(exchanges), "errors": errors}


def main():
    spec = load(sys.argv[1])
    if sys.argv[2] == "routes":
        print(json.dumps(routes(spec)))
    elif sys.argv[2] == "validate":
        print(json.dumps(check(spec, json.load(sys.stdin))))
    else:
        sys.exit(f"unknown command {sys.argv[2]!r}")


if __name__ == "__main__":
    main()
