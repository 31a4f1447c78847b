"""Whatever the input, loading a manifest either succeeds or raises ManifestError: never anything else."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facesync.errors import ManifestError
from facesync.manifest import load

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_keys = st.sampled_from(["version", "groups", "people", "users", "images", "user_info", "include", "sources",
                         "folder", "policy", "prune", "groups", "face_token", "url", "path", "g", "alice", "<<"])
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20) | \
    st.sampled_from(["faces/*.png", "../x.png", "/etc/passwd", "0" * 32, "*", "[", "NONE", "~"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_keys | st.text(max_size=8), inner, max_size=4), max_leaves=25)


def _load_text(tmp_path, text: str | bytes) -> None:
    path = tmp_path / "faceset.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        load(str(path))
    except ManifestError as problem:
        assert problem.diagnostics
        assert all(d.line >= 1 and d.column >= 1 for d in problem.diagnostics)


@_SETTINGS
@given(text=st.text(max_size=300))
def test_arbitrary_text(tmp_path, text):
    _load_text(tmp_path, text.encode("utf-8", "replace"))


@_SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(tmp_path, data):
    _load_text(tmp_path, data)


@_SETTINGS
@given(body=st.dictionaries(_keys, _values, max_size=5), with_version=st.booleans())
def test_arbitrary_structures(tmp_path, body, with_version):
    if with_version:
        body["version"] = 1
    _load_text(tmp_path, yaml.safe_dump(body, allow_unicode=True))


@_SETTINGS
@given(text=st.lists(st.sampled_from(["version: 1\n", "groups:\n", "  g:\n", "    users:\n", "      u:\n",
                                      "        images: [x.png]\n", "  - a\n", "&a ", "*a\n", "[", "]", "{",
                                      ": ", "\t", "<<: *a\n", "'", "!!binary x\n", "2024-13-45\n"]),
                     max_size=30).map("".join))
def test_yaml_shaped_fragments(tmp_path, text):
    _load_text(tmp_path, text)
