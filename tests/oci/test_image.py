"""Strict parsing of manifests and indexes (untrusted JSON), schema1 refusal, platform choice."""

import json

import pytest

from ketch.errors import InvalidArgument, NotFound
from ketch.oci import image as oci
from ketch.oci import platform

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest(**over):
    doc = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
           "config": {"mediaType": oci.OCI_CONFIG, "digest": D1, "size": 10},
           "layers": [{"mediaType": oci.OCI_LAYER_GZIP, "digest": D2, "size": 20},
                      {"mediaType": oci.OCI_LAYER_ZSTD, "digest": D3, "size": 30}]}
    doc.update(over)
    return json.dumps(doc).encode()


def index(entries, mt=oci.OCI_INDEX):
    return json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": entries}).encode()


def entry(digest, plat, mt=oci.OCI_MANIFEST):
    return {"mediaType": mt, "digest": digest, "size": 100, "platform": plat}


def test_parse_oci_manifest():
    m = oci.parse_manifest(manifest(), oci.OCI_MANIFEST)
    assert isinstance(m, oci.Manifest)
    assert m.config.digest == D1 and [x.size for x in m.layers] == [20, 30]
    assert [x.compression for x in m.layers] == ["gzip", "zstd"]
    # mediaType may be missing in OCI: decided from content
    doc = json.loads(manifest())
    del doc["mediaType"]
    assert isinstance(oci.parse_manifest(json.dumps(doc).encode()), oci.Manifest)
    # canonical round trip
    assert oci.parse_manifest(oci.canonical_json(m.to_json())) == m


def test_foreign_layers_are_parsed_and_flagged():
    layers = [{"mediaType": oci.DOCKER_LAYER_FOREIGN, "digest": D2, "size": 20,
               "urls": ["https://example.invalid/layer.tar.gz"]},
              {"mediaType": oci.DOCKER_LAYER_GZIP, "digest": D3, "size": 30}]
    m = oci.parse_manifest(manifest(mediaType=oci.DOCKER_MANIFEST, layers=layers,
                                    config={"mediaType": oci.DOCKER_CONFIG, "digest": D1, "size": 1}))
    assert m.layers[0].foreign and m.layers[0].urls == ("https://example.invalid/layer.tar.gz",)
    assert not m.layers[1].foreign and m.layers[0].compression == "gzip"


@pytest.mark.parametrize("data,ctype,why", [
    (manifest(), oci.DOCKER_MANIFEST, "does not match the content type"),
    (manifest(schemaVersion=3), None, "schemaVersion must be 2"),
    (manifest(schemaVersion=True), None, "schemaVersion must be 2"),
    (manifest(layers={}), None, "layers must be a list"),
    (manifest(layers=[{"mediaType": oci.OCI_LAYER, "digest": D2, "size": -1}]), None, "non-negative"),
    (manifest(layers=[{"mediaType": oci.OCI_LAYER, "digest": D2, "size": True}]), None, "non-negative"),
    (manifest(layers=[{"mediaType": oci.OCI_LAYER, "digest": D2, "size": 1.5}]), None, "non-negative"),
    (manifest(layers=[{"mediaType": oci.OCI_LAYER, "digest": "sha256:zz", "size": 1}]), None, "invalid digest"),
    (manifest(layers=[{"mediaType": 5, "digest": D2, "size": 1}]), None, "must be a string"),
    (manifest(layers=[{"mediaType": "not a type", "digest": D2, "size": 1}]), None, "malformed media type"),
    (manifest(layers=[{"mediaType": oci.OCI_LAYER, "digest": D2, "size": 1, "urls": ["file:///x"]}]), None,
     "not http"),
    (manifest(annotations={"a": 1}), None, "annotations"),
    (manifest(manifests=[]), None, "must not have manifests"),
    (manifest(manifests=[], mediaType=None), None, "ambiguous"),
    (manifest(mediaType=oci.DOCKER_MANIFEST), None, "docker schema2 config"),
    (manifest(mediaType="application/vnd.example+json"), None, "unsupported manifest media type"),
    (b'{"schemaVersion": 2, "schemaVersion": 2}', None, "duplicate key"),
    (b"[1, 2]", None, "not a JSON object"),
    (b"\xff\xfe", None, "not valid JSON"),
    (b'{"schemaVersion": NaN}', None, "not JSON"),
    (b" " * (4 * 1024 * 1024 + 1), None, "exceeds"),
    (index([{"mediaType": oci.OCI_MANIFEST, "digest": D1, "size": 1, "platform": {"os": 1}}]), None,
     "os and architecture must be strings"),
    (index([], mt=oci.DOCKER_MANIFEST_LIST)[:-1] + b', "layers": []}', None, "must not have config or layers"),
])
def test_malformed_manifests_refused(data, ctype, why):
    with pytest.raises(InvalidArgument) as e:
        oci.parse_manifest(data, ctype)
    assert why in str(e.value)


@pytest.mark.parametrize("data,ctype", [
    (json.dumps({"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}).encode(), None),
    (json.dumps({"schemaVersion": 1, "name": "x"}).encode(), oci.DOCKER_SCHEMA1_SIGNED),
    (manifest(), oci.DOCKER_SCHEMA1),
])
def test_schema1_refused_with_reason(data, ctype):
    with pytest.raises(InvalidArgument, match="schema1 manifests are not supported: .*deprecated.*repush"):
        oci.parse_manifest(data, ctype)


def test_index_platform_choice():
    entries = [
        entry(D1, {"os": "linux", "architecture": "amd64"}),
        entry(D2, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        entry(D3, {"os": "linux", "architecture": "arm", "variant": "v6"}),
        {"mediaType": oci.OCI_MANIFEST, "digest": "sha256:" + "4" * 64, "size": 1,
         "platform": {"os": "unknown", "architecture": "unknown"}},          # attestation
        entry("sha256:" + "5" * 64, {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ]
    ix = oci.parse_manifest(index(entries), oci.OCI_INDEX)
    assert isinstance(ix, oci.Index)
    assert ix.choose(platform.parse("linux/x86_64")).digest == D1
    assert ix.choose(platform.parse("linux/amd64")).digest == D1
    assert ix.choose(platform.parse("linux/arm64")).digest == D2
    assert ix.choose(platform.parse("linux/aarch64")).digest == D2
    assert ix.choose(platform.parse("linux/arm64/v8")).digest == D2
    assert ix.choose(platform.parse("linux/arm/v7")).digest == "sha256:" + "5" * 64   # exact beats v6
    assert ix.choose(platform.parse("linux/arm/v6")).digest == D3
    with pytest.raises(NotFound, match="no matching manifest for linux/arm/v5"):
        ix.choose(platform.parse("linux/arm/v5"))
    with pytest.raises(NotFound):
        ix.choose(platform.parse("windows/amd64"))
    if platform.host().architecture == "amd64":
        assert ix.choose().digest == D1


@pytest.mark.parametrize("spec,want", [
    ("linux/amd64", "linux/amd64"), ("linux/x86_64", "linux/amd64"), ("linux/arm64/v8", "linux/arm64"),
    ("linux/aarch64", "linux/arm64"), ("linux/arm", "linux/arm/v7"), ("linux/armhf", "linux/arm/v7"),
    ("linux/armel", "linux/arm/v6"), ("arm64", "linux/arm64"), ("linux/i386", "linux/386"),
    ("linux/arm/7", "linux/arm/v7"),
])
def test_platform_parse_normalises(spec, want):
    assert str(platform.parse(spec)) == want


@pytest.mark.parametrize("spec", ["", "linux/", "a/b/c/d", "linux/amd 64", "linux/am$d"])
def test_platform_parse_refuses(spec):
    with pytest.raises(InvalidArgument, match="invalid platform"):
        platform.parse(spec)


def test_parse_config():
    cfg = oci.parse_config(json.dumps({"architecture": "amd64", "os": "linux",
                                       "rootfs": {"type": "layers", "diff_ids": [D1]}}).encode())
    assert cfg["os"] == "linux"
    with pytest.raises(InvalidArgument):
        oci.parse_config(json.dumps({"rootfs": {"type": "layers", "diff_ids": ["nope"]}}).encode())
    with pytest.raises(InvalidArgument):
        oci.parse_config(json.dumps({"rootfs": {"type": "other", "diff_ids": []}}).encode())
