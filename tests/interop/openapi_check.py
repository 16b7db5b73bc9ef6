#!/usr/bin/env python3
"""Checks live exchanges against yima-gate's OpenAPI documents (openapi-spec-validator and
openapi-core, from PyPI). Used by tests/integration/openapi.rs.

    openapi_check.py EXCHANGES.jsonl NAME=SPEC.json [NAME=SPEC.json ...]

Each line of EXCHANGES is {"api": NAME, "method", "path", "query", "status", "content_type",
"body_b64"}. Every document must be a valid OpenAPI 3.0 document; every response must match the
operation's documented response for its status (an undocumented status is an error); every
operation of every document must have been exercised. Prints a JSON summary; exit 1 on any
failure.
"""
import base64
import json
import re
import sys
from urllib.parse import parse_qs

from openapi_core import OpenAPI
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def template_regex(path):
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def main():
    exchanges_path, specs = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    apis, operations, templates = {}, {}, {}
    failures = []
    for name, path in specs.items():
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        try:
            validate(spec)
        except Exception as e:  # the validator's own error types
            failures.append("%s: not a valid OpenAPI document: %s" % (name, e))
            continue
        # Operations are matched by path alone, wherever the server runs.
        apis[name] = OpenAPI.from_dict(dict(spec, servers=[{"url": "http://localhost"}]))
        ops = set()
        for p, item in spec["paths"].items():
            for m in METHODS:
                if m in item:
                    ops.add((m.upper(), p))
                    if "operationId" not in item[m]:
                        failures.append("%s: %s %s has no operationId" % (name, m.upper(), p))
        operations[name] = ops
        templates[name] = [(template_regex(p), p) for p in spec["paths"]]
    covered = {name: set() for name in apis}
    count = 0
    with open(exchanges_path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            name = e["api"]
            if name not in apis:
                continue
            count += 1
            body = base64.b64decode(e["body_b64"])
            args = {k: v[0] for k, v in parse_qs(e.get("query") or "").items()}
            request = MockRequest("http://localhost", e["method"].lower(), e["path"], args=args)
            response = MockResponse(body, status_code=e["status"], content_type=e["content_type"] or "")
            where = "%s %s %s → %d" % (name, e["method"], e["path"], e["status"])
            try:
                apis[name].validate_response(request, response)
            except (PathNotFound, OperationNotFound) as err:
                # A path or method no document names: the router's fallback, which must
                # still answer 404/405 with a JSON error body.
                try:
                    fallback_ok = e["status"] in (404, 405) and "error" in json.loads(body)
                except ValueError:
                    fallback_ok = False
                if not fallback_ok:
                    failures.append("%s: %s (body %r)" % (where, err, body[:200]))
            except Exception as err:
                detail = getattr(err, "__cause__", None) or err
                failures.append("%s: %s: %s (body %r)" % (where, type(err).__name__, detail, body[:200]))
            for rx, p in templates[name]:
                if rx.match(e["path"]) and (e["method"].upper(), p) in operations[name]:
                    covered[name].add((e["method"].upper(), p))
    for name, ops in operations.items():
        for m, p in sorted(ops - covered.get(name, set())):
            failures.append("%s: %s %s was never exercised" % (name, m, p))
    summary = {
        "exchanges": count,
        "operations": {n: len(o) for n, o in operations.items()},
        "covered": {n: len(c) for n, c in covered.items()},
        "failures": failures,
    }
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
