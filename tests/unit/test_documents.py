"""The document cache learns documents from the references of the ones it fetched, within bounds."""

from __future__ import annotations

import asyncio

from gateway.core.dialects.soap import served_references
from gateway.upstreams.documents import DocumentCache

GATEWAY = "https://gw.example.com/prefix"


def _schema(*locations: str) -> bytes:
    imports = "".join(f'<xsd:import namespace="urn:x" schemaLocation="{location}"/>' for location in locations)
    return f'<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema">{imports}</xsd:schema>'.encode()


def test_references_are_followed_only_within_the_gateways_webservices_tree() -> None:
    body = _schema("../services/S/_resources_/xsd/A.xsd", "B.xsd", f"{GATEWAY}/webservices/C.xsd",
                   "../../../../etc/passwd", "/webservices/D.xsd", "https://other.example/webservices/E.xsd",
                   f"{GATEWAY}/webservices/F.xsd?x=1", "%2e%2e/G.xsd", "H.xsd#part")
    assert served_references(GATEWAY + "/", "/webservices/wsdl/W.wsdl", body) == [
        "/webservices/services/S/_resources_/xsd/A.xsd", "/webservices/wsdl/B.xsd", "/webservices/C.xsd",
        "/webservices/wsdl/H.xsd"]


def test_the_cache_fetches_referenced_documents_up_to_its_bound() -> None:
    documents = {"/root": _schema("a", "b"), "/a": _schema("c", "d", "e"), "/b": _schema("a"),
                 "/c": _schema(), "/d": _schema(), "/e": _schema()}
    fetched: list[str] = []

    async def fetch(path: str) -> bytes | None:
        fetched.append(path)
        return documents.get(path)

    def references(path: str, body: bytes) -> list[str]:
        return ["/" + name for name in body.decode().split('schemaLocation="')[1:] for name in [name[:1]]]

    async def scenario() -> DocumentCache:
        cache = DocumentCache(paths=["/root"], fetch=fetch, refresh_interval=900, references=references,
                              max_documents=5)
        assert await cache.get("/root") == documents["/root"]
        assert not cache.serves("/unknown") and await cache.get("/unknown") is None
        for _ in range(100):  # the discovered fetches run in the background
            if all([await cache.get(p) for p in cache.paths]):
                break
            await asyncio.sleep(0.01)
        await cache.stop()
        return cache

    cache = asyncio.run(scenario())
    assert list(cache.paths) == ["/root", "/a", "/b", "/c", "/d"]  # /e would be the sixth: not followed
    assert sorted(fetched) == ["/a", "/b", "/c", "/d", "/root"]  # each once


def test_documents_a_revision_no_longer_names_are_forgotten_and_free_their_places() -> None:
    junk = [f"j{n}" for n in range(40)]
    documents: dict[str, bytes] = {"/root": _schema(*junk), **{f"/{name}": _schema() for name in junk}}

    async def fetch(path: str) -> bytes | None:
        return documents.get(path)

    def references(path: str, body: bytes) -> list[str]:
        return ["/" + part.split('"')[0] for part in body.decode().split('schemaLocation="')[1:]]

    async def scenario() -> DocumentCache:
        cache = DocumentCache(paths=["/root"], fetch=fetch, refresh_interval=900, references=references,
                              max_documents=8)
        await cache.refresh_all()
        assert len(cache.paths) == 8 and not cache.serves("/real")  # a bad revision took every place
        documents["/root"] = _schema("real")  # the vendor's next revision names one schema
        documents["/real"] = _schema()
        await cache.refresh_all()
        for _ in range(100):  # the newly named schema is fetched in the background
            if await cache.get("/real") is not None:
                break
            await asyncio.sleep(0.01)
        await cache.stop()
        return cache

    cache = asyncio.run(scenario())
    assert list(cache.paths) == ["/root", "/real"]
    assert not cache.serves("/j0")
