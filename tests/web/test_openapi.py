"""The OpenAPI document lists every API route with its method, from the live router."""

from __future__ import annotations


async def test_openapi_lists_the_contract_routes(client):
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path, method in [
        ("/api/v1/customers", "get"),
        ("/api/v1/customers", "post"),
        ("/api/v1/customers/{id}", "patch"),
        ("/api/v1/customers/{id}/timeline", "get"),
        ("/api/v1/calls", "get"),
        ("/api/v1/calls/stats", "get"),
        ("/api/v1/calls/originate", "post"),
    ]:
        assert method in paths[path], (path, method)
    op = paths["/api/v1/customers/{id}"]["patch"]
    assert op["parameters"][0]["name"] == "id"
    assert "security" not in op  # protected: inherits bearer/session
    assert paths["/api/v1/openapi.json"]["get"]["security"] == []
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))
